"""The registry: brands, API keys (scoped), campaigns, influencers, links, stores, fees, FX rates.

``Registry`` is the one object the rest of a process holds (``services.registry``):
one part per entity over a shared cache layer (``cache``: ClickHouse rows, Redis
records), plus the sweep that repairs records a Redis restart rolled back. Its flat
methods (``create_link``, ``link_by_code``, ...) are the parts' own, named for
callers that hold only the registry (auth, postbacks, the redirect's link cache).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from tracker.core.codes import Codes, salt_for
from tracker.registry.apikeys import ApiKeys
from tracker.registry.audit import AuditLog
from tracker.registry.brands import Brands
from tracker.registry.cache import Cache
from tracker.registry.campaigns import Campaigns
from tracker.registry.fees import Fees
from tracker.registry.fxrates import FxRates
from tracker.registry.influencers import Influencers
from tracker.registry.links import Links
from tracker.registry.reconcile import Sweep
from tracker.registry.stores import Stores
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


class Registry:
    """Registry reads and writes; every method is async, ClickHouse runs in a thread."""

    def __init__(self, settings: Settings, ch: ClickHouse, redis: aioredis.Redis) -> None:
        cache = Cache(ch, redis)
        self.codes = Codes(salt_for(settings.hashids_salt, settings.secret_key))
        self.apikeys = ApiKeys(cache)
        self.brands = Brands(cache, self.apikeys)
        self.campaigns = Campaigns(cache)
        self.influencers = Influencers(cache)
        self.links = Links(cache, self.codes, self.campaigns, self.influencers)
        self.stores = Stores(cache, settings.secret_key)
        self.fx = FxRates(cache, self.brands)
        self.fees = Fees(cache, self.campaigns, self.influencers, self.fx)
        self.sweep = Sweep(cache, self.links, self.fx)
        self.audit = AuditLog(ch)

        self.create_brand = self.brands.create
        self.get_brand = self.brands.get
        self.list_brands = self.brands.all
        self.brand_for_key = self.brands.for_key
        self.create_campaign = self.campaigns.create
        self.get_campaign = self.campaigns.get
        self.list_campaigns = self.campaigns.all
        self.create_influencer = self.influencers.create
        self.get_influencer = self.influencers.get
        self.list_influencers = self.influencers.all
        self.create_link = self.links.create
        self.update_link = self.links.update
        self.get_link = self.links.get
        self.list_links = self.links.all
        self.link_by_code = self.links.by_code
        self.link_by_id = self.links.by_id
        self.link_by_coupon = self.links.by_coupon
        self.create_store = self.stores.create
        self.get_store = self.stores.get
        self.store_row = self.stores.row
        self.list_stores = self.stores.all
        self.set_fx_rate = self.fx.put
        self.fx_rate = self.fx.rate
        self.list_fx_rates = self.fx.all
        self.create_fee = self.fees.create
        self.list_fees = self.fees.all
        self.reconcile = self.sweep.reconcile

    async def start(self) -> None:
        """Start the background sweep (``reconcile``)."""
        await self.sweep.start()

    async def stop(self) -> None:
        await self.sweep.stop()
