"""Realistic ad traffic: sessions of real-looking browsers and apps, event
mixes by rate, and user journeys, all drawn from one seeded random source.

The events come from podcast and video ad slots, as the seed's did. A
session is one listener or viewer: a device (desktop 50%, mobile 40%,
tablet 10%), a user agent that fits it, a location, an address (the
ingest path keeps it only truncated), a referrer, and the show and episode
whose ad slot they are in. Click values look like cost-per-click prices
(0.50 to 2.50) and conversion values like order values (10 to 60, priced
like shop items). The same seed gives the same events, but for their ids
(assigned by the ingest path) and times.
"""

import bisect
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.domain import EventType
from server.ingest.validation import IncomingEvent

# (device type, share)
DEVICES = (("desktop", 0.5), ("mobile", 0.4), ("tablet", 0.1))

USER_AGENTS = {
    "desktop": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Safari/605.1.15",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        "Spotify/1.2.52.442 Win32_x86_64/0 (PC desktop)",
    ),
    "mobile": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.6778.81 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.6778.81 Mobile Safari/537.36",
        "Podcasts/1.1.0 (com.apple.podcasts; build:4073.2.1; iOS 18.1.1) CFNetwork/1568.200.51",
        "Spotify/9.0.6 iOS/18.1 (iPhone16,2)",
        "PocketCasts/7.77 (Android 14; Pixel 8)",
        "Overcast/2024.11 (+http://overcast.fm/; iOS podcast app)",
    ),
    "tablet": (
        "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.6778.81 Safari/537.36",
        "Podcasts/1.1.0 (com.apple.podcasts; build:4073.2.1; iPadOS 18.1) CFNetwork/1568.200.51",
    ),
}

# (location, weight): where listeners are, roughly by audience size.
LOCATIONS = (
    ("New York, NY", 12),
    ("Los Angeles, CA", 9),
    ("Chicago, IL", 6),
    ("Houston, TX", 5),
    ("San Francisco, CA", 5),
    ("Seattle, WA", 4),
    ("Austin, TX", 3),
    ("Miami, FL", 3),
    ("Boston, MA", 3),
    ("Denver, CO", 2),
    ("Toronto, ON", 4),
    ("London, UK", 8),
    ("Manchester, UK", 2),
    ("Berlin, DE", 4),
    ("Paris, FR", 4),
    ("Amsterdam, NL", 2),
    ("Madrid, ES", 2),
    ("Sydney, AU", 3),
    ("Dublin, IE", 1),
    ("Stockholm, SE", 1),
)

REFERRERS = (
    ("", 40),  # an app or a direct visit: no referrer
    ("https://www.google.com/", 20),
    ("https://www.youtube.com/", 10),
    ("https://open.spotify.com/", 8),
    ("https://podcasts.apple.com/", 8),
    ("https://www.facebook.com/", 6),
    ("https://t.co/", 4),
    ("https://www.reddit.com/", 4),
)

SHOWS = ("show_morning_brief", "show_tech_talk", "show_true_crime", "show_sports_daily")
# Ad slots of an episode: pre-roll, two mid-rolls, post-roll (position 0..3).
AD_SLOTS = ("preroll", "midroll_1", "midroll_2", "postroll")
SLOT_WEIGHTS = (40, 25, 20, 15)

# The seed's journey: a click with probability 0.3; a view with 0.8, of 5 to
# 35 s; engagement past 10 s of it; completion past 20 s (then a conversion
# with 0.05), otherwise a skip at its end.
JOURNEY_CLICK = 0.3
JOURNEY_VIEW = 0.8
JOURNEY_VIEW_SECONDS = (5.0, 35.0)
JOURNEY_ENGAGED_AFTER = 10.0
JOURNEY_COMPLETED_AFTER = 20.0
JOURNEY_CONVERSION = 0.05

# The types that share the rest of the rates, evenly.
OTHER_TYPES = (EventType.VIEW, EventType.ENGAGEMENT, EventType.COMPLETION, EventType.SKIP)


@dataclass(frozen=True, slots=True)
class Rates:
    """Shares of the event types among generated events."""

    impression: float = 0.7
    click: float = 0.25
    conversion: float = 0.05

    def weights(self) -> list[tuple[EventType, float]]:
        rest = 1.0 - self.impression - self.click - self.conversion
        rest = rest if rest > 1e-9 else 0.0  # 0.7 + 0.25 + 0.05 is not exactly 1
        weights = [
            (EventType.IMPRESSION, self.impression),
            (EventType.CLICK, self.click),
            (EventType.CONVERSION, self.conversion),
            *((event_type, rest / len(OTHER_TYPES)) for event_type in OTHER_TYPES),
        ]
        return [(t, w) for t, w in weights if w > 0]


@dataclass(frozen=True, slots=True)
class Session:
    """One listener or viewer, in one ad slot of one episode."""

    session_id: str
    device_type: str
    user_agent: str
    location: str
    ip_address: str
    referrer: str
    show_id: str
    episode_id: str
    ad_slot_id: str
    position: int

    def metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "sessionId": self.session_id,
            "userAgent": self.user_agent,
            "deviceType": self.device_type,
            "location": self.location,
            "ipAddress": self.ip_address,
            "showId": self.show_id,
            "episodeId": self.episode_id,
            "adSlotId": self.ad_slot_id,
            "position": self.position,
        }
        if self.referrer:
            metadata["referrer"] = self.referrer
        return metadata


class _Weighted:
    """Draws from weighted choices in O(log n)."""

    def __init__(self, choices: Sequence[tuple[Any, float]]) -> None:
        self.values = [value for value, _ in choices]
        self.cumulative = list(itertools.accumulate(weight for _, weight in choices))

    def draw(self, rng: random.Random) -> Any:
        point = rng.random() * self.cumulative[-1]
        return self.values[min(bisect.bisect_right(self.cumulative, point), len(self.values) - 1)]


_DEVICES = _Weighted(DEVICES)
_LOCATIONS = _Weighted(LOCATIONS)
_REFERRERS = _Weighted(REFERRERS)
_SLOTS = _Weighted(list(zip(range(len(AD_SLOTS)), SLOT_WEIGHTS, strict=True)))


class Traffic:
    """Events of one organization's campaigns, drawn from ``seed``.

    ``events`` draws independent events by ``rates`` from a pool of live
    sessions (a session is seen a few times before it leaves), as a
    continuous simulation or a burst does; ``journey`` draws one session's
    whole funnel.
    """

    # Live sessions of ``events``; each draw replaces one with this chance.
    SESSION_POOL = 500
    NEW_SESSION = 0.3

    def __init__(
        self,
        organization_id: str,
        campaign_ids: Sequence[str],
        rates: Rates = Rates(),
        seed: int | None = None,
    ) -> None:
        self.organization_id = organization_id
        self.campaign_ids = list(campaign_ids)
        self.rng = random.Random(seed)
        self._types = _Weighted(rates.weights())
        self._sessions: list[Session] = []

    # -- the parts ---------------------------------------------------------

    def session(self) -> Session:
        rng = self.rng
        device = _DEVICES.draw(rng)
        slot = _SLOTS.draw(rng)
        show = rng.choice(SHOWS)
        return Session(
            session_id=f"session_{rng.getrandbits(64):016x}",
            device_type=device,
            user_agent=rng.choice(USER_AGENTS[device]),
            location=_LOCATIONS.draw(rng),
            ip_address=_ip_address(rng),
            referrer=_REFERRERS.draw(rng),
            show_id=show,
            episode_id=f"{show.removeprefix('show_')}_ep{rng.randint(1, 250)}",
            ad_slot_id=f"slot_{AD_SLOTS[slot]}",
            position=slot,
        )

    def click_value(self) -> float:
        """A cost per click: 0.50 to 2.50, most near 1.20."""
        return round(self.rng.triangular(0.5, 2.5, 1.2), 2)

    def conversion_value(self) -> float:
        """An order value: 10 to 60, priced like shop items (x.99, x.49)."""
        price = self.rng.triangular(10.0, 60.0, 25.0)
        return max(9.99, float(int(price)) + self.rng.choice((0.99, 0.99, 0.49)) - 1.0)

    def view_seconds(self) -> float:
        low, high = JOURNEY_VIEW_SECONDS
        return round(self.rng.uniform(low, high), 1)

    # -- events by rate ----------------------------------------------------

    def events(self, count: int, now_us: int) -> list[IncomingEvent]:
        """``count`` events by the rates, over the campaigns, at ``now_us``."""
        return [self._event(index, now_us) for index in range(count)]

    def _event(self, index: int, now_us: int) -> IncomingEvent:
        rng = self.rng
        if len(self._sessions) < self.SESSION_POOL or rng.random() < self.NEW_SESSION:
            session = self.session()
            if len(self._sessions) < self.SESSION_POOL:
                self._sessions.append(session)
            else:
                self._sessions[rng.randrange(self.SESSION_POOL)] = session
        else:
            session = rng.choice(self._sessions)
        event_type: EventType = self._types.draw(rng)
        value = None
        duration = None
        if event_type is EventType.CLICK:
            value = self.click_value()
        elif event_type is EventType.CONVERSION:
            value = self.conversion_value()
        elif event_type in OTHER_TYPES:
            duration = self.view_seconds()
        return self._incoming(
            index, event_type, rng.choice(self.campaign_ids), session, now_us, value, duration
        )

    # -- journeys ------------------------------------------------------------

    def journey(self, campaign_id: str, end_us: int, first_index: int = 0) -> list[IncomingEvent]:
        """One session's funnel for a campaign, timed as it would happen and
        ending at ``end_us``, with the seed's odds: an impression; the ad
        played (a view, 80%) for 5 to 35 s, with an engagement past 10 s of
        it, then a completion past 20 s, otherwise a skip where it stopped;
        a click (30%) a few seconds later; after a completion, a conversion
        (5%) minutes later, once the listener has shopped."""
        rng = self.rng
        session = self.session()
        # (seconds since the impression, type, value, duration)
        steps: list[tuple[float, EventType, float | None, float | None]] = [
            (0.0, EventType.IMPRESSION, None, None)
        ]
        clock = rng.uniform(0.5, 2.0)  # the ad starts playing
        completed = False
        if rng.random() < JOURNEY_VIEW:
            watched = self.view_seconds()
            steps.append((clock, EventType.VIEW, None, watched))
            if watched > JOURNEY_ENGAGED_AFTER:
                engaged_at = clock + rng.uniform(JOURNEY_ENGAGED_AFTER, watched)
                steps.append((engaged_at, EventType.ENGAGEMENT, None, None))
            clock += watched
            completed = watched > JOURNEY_COMPLETED_AFTER
            end_type = EventType.COMPLETION if completed else EventType.SKIP
            steps.append((clock, end_type, None, watched))
        if rng.random() < JOURNEY_CLICK:
            clock += rng.uniform(1.0, 6.0)
            steps.append((clock, EventType.CLICK, self.click_value(), None))
        if completed and rng.random() < JOURNEY_CONVERSION:
            clock += rng.uniform(20.0, 240.0)  # on the advertiser's site, then buying
            steps.append((clock, EventType.CONVERSION, self.conversion_value(), None))
        start_us = end_us - round(steps[-1][0] * 1_000_000)
        return [
            self._incoming(
                first_index + offset,
                event_type,
                campaign_id,
                session,
                start_us + round(at * 1_000_000),
                value,
                duration,
            )
            for offset, (at, event_type, value, duration) in enumerate(steps)
        ]

    def _incoming(
        self,
        index: int,
        event_type: EventType,
        campaign_id: str,
        session: Session,
        occurred_us: int,
        value: float | None,
        duration: float | None,
    ) -> IncomingEvent:
        metadata = session.metadata()
        if duration is not None:
            metadata["duration"] = duration
        return IncomingEvent(
            index=index,
            size=0,
            event_id="",
            event_type=int(event_type),
            campaign_id=campaign_id,
            organization_id=self.organization_id,
            occurred_us=occurred_us,
            timestamp_error="",
            value=value,
            session_id=session.session_id,
            duration=duration,
            metadata=metadata,
        )


def _ip_address(rng: random.Random) -> str:
    """A listener's address: IPv4 mostly, IPv6 (in the documentation
    range) for a fifth. The ingest path keeps it only truncated."""
    if rng.random() < 0.2:
        return "2001:db8:" + ":".join(f"{rng.getrandbits(16):x}" for _ in range(6))
    return (
        f"{rng.randint(24, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    )
