"""meshgen: service-mesh intents in, reviewed GitOps pull requests out."""

__version__ = "0.1.0"
