"""OpenID Connect sign-in: authorization code with PKCE against any provider with discovery.

``settings`` (the ``PAI_OIDC_*`` knobs), ``onetime``, ``idtoken`` and ``mapping`` (pure), ``provider``
(discovery, JWKS and the token endpoint over HTTP), ``flow`` (the RPCs and their records).
"""
