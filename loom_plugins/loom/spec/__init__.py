"""Template models and the loader that turns template files into a validated catalog."""

from loom.spec.loader import Catalog, load_catalog
from loom.spec.models import (
    ClusterTemplate,
    HardwareType,
    ImageType,
    Provider,
    Service,
)

__all__ = [
    "Catalog",
    "ClusterTemplate",
    "HardwareType",
    "ImageType",
    "Provider",
    "Service",
    "load_catalog",
]
