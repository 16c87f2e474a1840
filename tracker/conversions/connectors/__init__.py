"""Store connectors: a platform's signed order webhook in, an ``OrderEvent`` out.

One module per platform, each with the same shape: ``verify`` (the platform's own
signature scheme; raises ``tracker.core.errors.Unauthorized``) and ``parse`` (raw body
→ ``OrderEvent``, or None for an event it does not handle: answer 200
``{"ignored": true}``), plus ``parse_payload``/``parse_event`` for a body already
decoded with ``payload.load_json``:

- ``shopify``: ``verify(body, hmac_header, secret)``, ``parse(topic, body, click_id_param=...)``;
- ``woocommerce``: ``is_ping(body)``, ``verify(body, signature_header, secret)``, ``parse(topic, body)``;
- ``stripe_``: ``verify(body, signature_header, secret, now=...)``, ``parse(body)``, ``event_id(event)``.

``event.refund_share`` turns an order's merged refunds into its commissionable
refund. Everything here is pure: no I/O, no clock.
"""

from tracker.conversions.connectors.event import OrderEvent, RefundShare, refund_share

__all__ = ["OrderEvent", "RefundShare", "refund_share"]
