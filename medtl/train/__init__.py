"""Fine-tuning: strategies, the training loop, metrics, plots and run outputs."""
