"""Fitted recommenders: ``fit_bundle`` trains every component once; ``Bundle.load`` serves them."""

from .bundle import FUSED, Bundle, FusedScorer
from .catalogue import ItemSpace
from .components import COMPONENTS, Component, TrainingData, component_class, component_names, register_component
from .fit import FitConfig, fit_bundle
from .manifest import BundleError, BundleManifest, read_manifest

__all__ = [
    "COMPONENTS", "FUSED", "Bundle", "BundleError", "BundleManifest", "Component", "FitConfig", "FusedScorer",
    "ItemSpace", "TrainingData", "component_class", "component_names", "fit_bundle", "read_manifest",
    "register_component",
]
