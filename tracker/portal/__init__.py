"""The influencer's own view: ``/api/v1/me/*`` and the sign-in links of the portal.

An influencer reads only their own links, figures, conversions (no customer data) and
commission, through an ``influencer`` API key or the portal session
(``tracker.api.auth.viewer_of``). Reports come from ``tracker.reports`` with the
influencer as a filter the caller cannot change; the page itself is ``tracker.web.portal``.
"""
