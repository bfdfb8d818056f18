"""The NATS auth callout: one bus identity per node agent on Kubernetes.

A DaemonSet's pods cannot each be given a user by nats-server's static configuration, so on Kubernetes
the node agents connect with their pod's projected service-account token (audience ``pai-nats``) and
nats-server asks this responder (``$SYS.REQ.USER.AUTH``, NATS auth callout, nats-server 2.10 or later)
who they are. The responder has the token reviewed by the Kubernetes API server (TokenReview), takes the
node the pod runs on from the review (``authentication.kubernetes.io/node-name``, Kubernetes 1.30 or
later) and answers a user JWT, signed with the callout's account key, whose permissions are exactly that
node's in ``pai_common.bus_permissions`` (what ``pai up`` gives each node agent). No node name, no user:
there is no shared node user to fall back to.

``jwt``: NATS JWTs (encode, decode, verify); ``decision``: the pure core (a review's answer to a node or a
refusal, the node's user claims); ``review``: the TokenReview through the official client;
``responder``: the NATS side; ``__main__``: the process (``python -m pai_auth.callout``).
"""
