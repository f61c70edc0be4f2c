"""One LightningModule per algorithm family."""
