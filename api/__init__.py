from api.app import ApiDeps, create_app

__all__ = ["ApiDeps", "create_app"]
