"""The load's events: their bytes are the product's events, and the tally of
acknowledged mix positions counts them by campaign and type exactly."""

from collections import Counter

from clients import pb
from loadgen.events import MIX_LENGTH, EventEncoder, Tally, check_encoding

CAMPAIGNS = ["camp_a", "camp_b", "camp_c"]
TYPE_NAMES = {
    value: name.removeprefix("EVENT_TYPE_").lower() for name, value in pb.EventType.items()
}


def test_the_encoded_events_are_what_make_event_builds() -> None:
    check_encoding("org_check", CAMPAIGNS)


def test_the_tally_counts_the_events_sent_by_campaign_and_type() -> None:
    encoder = EventEncoder("org_check", CAMPAIGNS, seed=3)
    tally = Tally()
    sent: Counter[tuple[str, str]] = Counter()
    # Batches of several sizes, one across the end of the mix, one longer than it.
    for count in (1, 100, 4_999, MIX_LENGTH - 5_100 + 7, 50, MIX_LENGTH + 3):
        position = encoder.position
        request = pb.StreamEventsRequest.FromString(encoder.stream_message(count))
        assert len(request.events) == count
        sent.update((e.campaign_id, TYPE_NAMES[e.event_type]) for e in request.events)
        tally.add(position, count)
    counted = Counter(
        {
            (campaign_id, event_type): n
            for campaign_id, types in tally.by_campaign(encoder.mix).items()
            for event_type, n in types.items()
        }
    )
    assert counted == sent
