"""The portal tests use the registry's app fixtures (a brand, a campaign, an influencer)."""

from tests.registry.conftest import anyio_backend, client, world  # noqa: F401
