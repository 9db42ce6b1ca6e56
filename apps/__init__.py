"""medtl's applications: the Gradio app for clinicians (``medtl app``).

``apps.medtl_app`` builds and launches the page; ``apps.viewer`` (slices, planes,
windows, overlays) and ``apps.uploads`` (archive safety, staging) are the pure,
browser-free logic it stands on.
"""
