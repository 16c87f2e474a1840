"""The traffic shape of the load test, without locust (so tests can import it).

User agents with their share of followers' clicks, and Zipf-skewed link popularity.
"""

from __future__ import annotations

import bisect
import itertools
import random

# (weight, user agent, is_bot): in-app browsers dominate influencer traffic.
USER_AGENTS: list[tuple[float, str, bool]] = [
    (
        22,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Mobile/15E148 Instagram 325.0.0.24.106 (iPhone15,2; iOS 17_4; en_US; en; scale=3.00; 1179x2556)",
        False,
    ),
    (
        12,
        "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Version/4.0 Chrome/122.0.6261.105 Mobile Safari/537.36 Instagram 321.0.0.39.106 Android",
        False,
    ),
    (
        10,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Mobile/15E148 musical_ly_33.6.0 JsSdk/2.0 NetType/WIFI Channel/App Store ByteLocale/en",
        False,
    ),
    (
        6,
        "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 "
        "Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/449.0.0.36.108;]",
        False,
    ),
    (
        14,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Mobile/15E148 Safari/604.1",
        False,
    ),
    (
        9,
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 "
        "Mobile Safari/537.36",
        False,
    ),
    (
        10,
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 "
        "Safari/537.36",
        False,
    ),
    (
        6,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 "
        "Safari/605.1.15",
        False,
    ),
    (3, "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:123.0) Gecko/20100101 Firefox/123.0", False),
    # Crawlers and link previews: ~8% of requests.
    (2.5, "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", True),
    (1.5, "Twitterbot/1.0", True),
    (1.5, "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
    (1.0, "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", True),
    (0.7, "WhatsApp/2.23.20.0 A", True),
    (0.8, "curl/8.5.0", True),
]
_UA_CUM = list(itertools.accumulate(w for w, _, _ in USER_AGENTS))
REFERERS = ["https://l.instagram.com/", "https://www.tiktok.com/", "https://t.co/", "", "", ""]


def pick_user_agent(rng: random.Random) -> tuple[str, bool]:
    i = bisect.bisect(_UA_CUM, rng.random() * _UA_CUM[-1])
    _, ua, bot = USER_AGENTS[i]
    return ua, bot


def zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return list(itertools.accumulate(1 / (k**s) for k in range(1, n + 1)))
