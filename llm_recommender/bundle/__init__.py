"""Fitted recommenders: ``fit_bundle`` trains every component once; ``Bundle.load`` serves them."""

from ..errors import BundleError
from .bundle import Bundle
from .fit import FitConfig, fit_bundle
from .manifest import BundleManifest, read_manifest

__all__ = ["Bundle", "BundleError", "BundleManifest", "FitConfig", "fit_bundle", "read_manifest"]
