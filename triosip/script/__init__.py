"""Route scripts: loading a routes file and the API its routes use (`triosip.script.api`)."""

from triosip.script._loader import DEFAULT_ROUTES as DEFAULT_ROUTES
from triosip.script._loader import RoutesLoadError as RoutesLoadError
from triosip.script._loader import ScriptHandlers as ScriptHandlers
from triosip.script._loader import load_routes as load_routes
from triosip.script._runner import ScriptEnvironment as ScriptEnvironment

__all__ = [
    "DEFAULT_ROUTES",
    "RoutesLoadError",
    "ScriptEnvironment",
    "ScriptHandlers",
    "load_routes",
]
