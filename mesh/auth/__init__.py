"""Who is asking: bearer JWTs verified into a :class:`Principal` (tenant, scopes)."""

from mesh.auth.principal import Principal
from mesh.auth.verifier import AuthError, TokenVerifier, auth_config_problem

__all__ = ["AuthError", "Principal", "TokenVerifier", "auth_config_problem"]
