from api.app import create_app
from api.context import ApiDeps

__all__ = ["ApiDeps", "create_app"]
