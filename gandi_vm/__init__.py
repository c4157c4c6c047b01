"""gandi-vm: in-guest agent that makes hot-plugged resources usable and applies boot configuration."""

__version__ = "0.1.0"
