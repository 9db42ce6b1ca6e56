"""Run the medtl app from a checkout, the way Gradio apps and Spaces are started:

    python apps/medtl_app.py --model runs/pneu [--model ct=runs/ct3d] [--host 127.0.0.1] [--port 7860]

The same as ``medtl app``; the app itself is :mod:`medtl.app` (it ships in the wheel).
"""

import sys

from medtl.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
