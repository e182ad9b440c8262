"""bundler: K3s airgap image bundles for Multus, built, verified and placed."""

__version__ = "0.1.0"
