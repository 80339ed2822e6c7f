"""Kubernetes RBAC for Shipyard: a pure authorizer (`authorizer`) and the built-in roles (`builtin`)."""

from .authorizer import (
    KINDS,
    RBAC_API_VERSION,
    RBAC_GROUP,
    Attributes,
    Decision,
    Policy,
    PolicyRule,
    UserInfo,
    authorize,
    denial_message,
    needed_role,
    rules_for,
    service_account_user,
    validate_object,
)
from .builtin import BUILTIN_ROLE_ORDER, builtin_cluster_roles, builtin_objects

__all__ = [
    "BUILTIN_ROLE_ORDER", "KINDS", "RBAC_API_VERSION", "RBAC_GROUP", "Attributes", "Decision", "Policy",
    "PolicyRule", "UserInfo", "authorize", "builtin_cluster_roles", "builtin_objects", "denial_message",
    "needed_role", "rules_for", "service_account_user", "validate_object",
]
