"""User agents and referers: device, browser, OS and bot verdict; referer host; the RE2 crawler matcher."""

from __future__ import annotations

import pytest

from tracker.ingest import agents

IPHONE_IG = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 Instagram 300.0.0.1 (iPhone14,2; iOS 17_0; en_US)"
)
FB_IAB = (
    "Mozilla/5.0 (Linux; Android 13; SM-G991B Build/TP1A; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Version/4.0 Chrome/119 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/440.0.0.33.116;]"
)
FB_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 [FBAN/FBIOS;FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;FBSV/16.6;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5]"
)
TIKTOK = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148 musical_ly_32.5.0 JsSdk/2.0 NetType/WIFI Channel/App Store ByteLocale/en Region/US "
    "BytedanceWebview/d8a21c6"
)
TIKTOK_ANDROID = (
    "Mozilla/5.0 (Linux; Android 12; SM-G998B Build/SP1A.210812.016; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Version/4.0 Chrome/108.0.5359.128 Mobile Safari/537.36 trill_280103 JsSdk/1.0 NetType/WIFI "
    "Channel/googleplay AppName/trill app_version/28.1.3 BytedanceWebview/d8a21c6"
)
CHROME_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
)
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 "
    "Safari/605.1.15"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.0 "
    "Mobile/15E148 Safari/604.1"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
)
KINDLE = (
    "Mozilla/5.0 (Linux; U; Android 4.0.3; en-us; KFTT Build/IML74K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Silk/3.68 like Chrome/39.0.2171.93 Safari/537.36"
)
PIXEL = (
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 "
    "Mobile Safari/537.36"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
CHROMEBOOK = (
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
)
PS5 = "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko)"


@pytest.mark.parametrize(
    ("ua", "device", "browser", "os"),
    [
        (IPHONE_IG, "mobile", "Instagram", "iOS"),
        (FB_IAB, "mobile", "Facebook", "Android"),
        (FB_IOS, "mobile", "Facebook", "iOS"),
        (TIKTOK, "mobile", "TikTok", "iOS"),
        (TIKTOK_ANDROID, "mobile", "TikTok", "Android"),
        (PIXEL, "mobile", "Chrome", "Android"),
        (CHROME_WIN, "desktop", "Chrome", "Windows"),
        (SAFARI_MAC, "desktop", "Safari", "Mac OS X"),
        (FIREFOX_LINUX, "desktop", "Firefox", "Linux"),
        (CHROMEBOOK, "desktop", "Chrome", "Chrome OS"),
        (IPAD, "tablet", "Mobile Safari", "iOS"),
        (ANDROID_TABLET, "tablet", "Chrome", "Android"),
        (KINDLE, "tablet", "Amazon Silk", "Android"),
        (PS5, "other", None, "Other"),
    ],
)
def test_people_get_a_device_browser_and_os(ua: str, device: str, browser: str | None, os: str) -> None:
    agent = agents.classify_agent(ua)
    assert agent.bot_reason == ""
    assert agent.device == device
    if browser is not None:
        assert agent.browser.startswith(browser)
    assert agent.os == os


@pytest.mark.parametrize(
    ("ua", "reason"),
    [
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "preview"),
        ("facebookcatalog/1.0", "preview"),
        ("Twitterbot/1.0", "preview"),
        ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "preview"),
        ("LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)", "preview"),
        ("WhatsApp/2.23.20.0 A", "preview"),
        ("TelegramBot (like TwitterBot)", "preview"),
        ("Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)", "preview"),
        ("Pinterest/0.2 (+https://www.pinterest.com/bot.html)", "preview"),
        ("Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5", "preview"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 "
            "Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
            "preview",
        ),
        (
            "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0 Mobile Safari/537.36 (compatible; Google-InspectionTool/1.0;)",
            "preview",
        ),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "crawler"),
        ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "crawler"),
        ("curl/8.4.0", "crawler"),
        ("python-requests/2.31.0", "crawler"),
        ("Wget/1.21", "crawler"),
        ("", "empty_ua"),
        ("   ", "empty_ua"),
    ],
)
def test_bots_are_classified_with_a_reason(ua: str, reason: str) -> None:
    agent = agents.classify_agent(ua)
    assert agent.device == "bot"
    assert agent.bot_reason == reason


@pytest.mark.parametrize(
    ("referer", "host"),
    [
        ("https://www.Instagram.com/p/abc?x=1", "www.instagram.com"),
        ("http://t.co/xyz", "t.co"),
        ("https://user:pw@Example.ORG:8443/path", "example.org"),
        ("android-app://com.google.android.gm/", "com.google.android.gm"),
        ("l.facebook.com/l.php", "l.facebook.com"),
        ("", ""),
        ("   ", ""),
        ("https://[::1]:80/", "::1"),
        ("https://[::1/", ""),
        ("not a url at all", ""),
        ("https://example.com./", "example.com"),
    ],
)
def test_referer_host(referer: str, host: str) -> None:
    assert agents.referer_host(referer) == host


def test_agents_are_cached() -> None:
    agents.classify_agent.cache_clear()
    for _ in range(100):
        agents.classify_agent(CHROME_WIN)
    info = agents.classify_agent.cache_info()
    assert (info.misses, info.hits) == (1, 99)


def _crawler_corpus() -> list[str]:
    """User agents on both sides of crawlerdetect's line: every literal pattern of its lists inside
    realistic agents, its one lookahead pattern around its boundary, people's agents and the tables above."""
    import re
    import secrets

    from tests.ingest_helpers import USER_AGENTS

    literal = re.compile(r"[\w .;:/+-]+")
    crawlers = [p.strip("^$") for p in agents.CRAWLER_PATTERNS if literal.fullmatch(p.strip("^$"))]
    excluded = [p.strip("^$") for p in agents.EXCLUSION_PATTERNS if literal.fullmatch(p.strip("^$"))]
    people = [IPHONE_IG, FB_IAB, FB_IOS, TIKTOK, TIKTOK_ANDROID, CHROME_WIN, SAFARI_MAC, *USER_AGENTS]
    corpus = list(people)
    for i, name in enumerate(crawlers):
        corpus += [name, f"Mozilla/5.0 (compatible; {name}/2.1; +https://example.org/bot)", f"{people[i % 7]} {name}"]
        corpus.append(f"{people[i % 7]} {name.lower()}")  # crawlerdetect ignores case
    for i, name in enumerate(excluded):
        corpus += [name, f"{people[i % 7]} {name}", f"{name} {crawlers[i]}"]
    corpus += ["YandexBot/3.0", "YandexSearch/1.0", "Mozilla/5.0 (compatible; YandexSearchBot)", "yandexsearch yandex"]
    corpus += [f"{p} {secrets.token_hex(4)}" for p in people]  # versions and build ids vary
    return corpus


def test_crawlers_give_crawlerdetects_verdict() -> None:
    """The RE2 matcher of crawlerdetect's patterns agrees with crawlerdetect itself."""
    from crawlerdetect import CrawlerDetect

    reference = CrawlerDetect()
    fast = agents.Crawlers()
    corpus = _crawler_corpus()
    disagree = [ua for ua in corpus if fast(ua.strip()) != reference.is_crawler(ua.strip())]
    assert disagree == []
    verdicts = [fast(ua) for ua in corpus]
    assert sum(verdicts) > 4000 and verdicts.count(False) > 100  # the corpus holds both kinds
