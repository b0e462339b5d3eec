"""A caller that talks with the session agent (`session_agent`) and reports what it heard.

`converse` joins a room as the participant `caller`, with a microphone track that carries silence
until it speaks, waits for the agent, then says each line of its script in turn: a `Text` goes
on the `lk.chat` text stream, a `Tone` is spoken as a tone burst (which the agent's STT hears as
"a <hz> hertz tone"). For each it waits for the agent's answer: the agent's transcription (the
`lk.transcription` text stream) and the non-silent frames of the agent's audio track. Then it
hangs up, or stays until the agent ends the call. A call is cut when the agent leaves before the
script is done, or leaves without saying "bye" (what the agent sends when its hold time is up),
or when the caller's own connection is lost.

A script may hold a `Pause`: the caller stops talking until the test lets it go on. One with
`new_agent` (the test killed the agent's worker) then waits for another agent to join the room
(call recovery) and talks with that one. An agent replaced so, with the script done and a "bye"
at the end, is a call kept; the caller reports every agent it met.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from array import array
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from livekit import api, rtc

IDENTITY = "caller"
SAMPLE_RATE = 48000
FRAME_S = 0.02
LOUD = 2000
"""Peak amplitude (int16) above which a frame is sound, not silence (Opus keeps silence near 0)."""
CONNECT_TIMEOUT_S = 20.0
AGENT_JOIN_TIMEOUT_S = 60.0
PAUSE_TIMEOUT_S = 240.0
REPLY_TIMEOUT_S = 30.0
QUIET_S = 0.6
"""How long the agent's audio must stay silent before the caller says its next line."""
TONE_S = 1.0
MICROPHONE_QUEUE_MS = 200
"""Audio queued ahead in the microphone: a line is spoken at most this late."""


@dataclass(frozen=True, slots=True)
class Text:
    """A line typed into the chat."""

    text: str


@dataclass(frozen=True, slots=True)
class Tone:
    """A line spoken: a burst of a sine at `hertz`, TONE_S long."""

    hertz: float


@dataclass(frozen=True, slots=True)
class Pause:
    """The caller sets `reached` and waits until `go_on` is set (up to PAUSE_TIMEOUT_S); with
    `new_agent`, then for an agent it has not met yet to be in the room."""

    go_on: threading.Event
    new_agent: bool = False
    reached: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the caller heard after saying one line."""

    said: Text | Tone
    text: str
    """The agent's transcription of its answer ("" when none came in REPLY_TIMEOUT_S)."""
    loud_frames: int
    """Non-silent frames of the agent's audio from the line said until the agent fell quiet."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """How a call went, seen by its caller."""

    room: str
    agent_joined: bool
    replies: tuple[Reply, ...]
    agents: tuple[str, ...]
    """The agents' identities, in the order they joined."""
    said_bye: bool
    """The agent said "bye" before it left: it ran the call to its end."""
    cut: bool
    """The agent left before the script was done or without saying bye, or the caller's own
    connection was lost."""


@dataclass
class _Call:
    """What the room's callbacks saw, with the tasks they started."""

    joined: asyncio.Event = field(default_factory=asyncio.Event)
    left: asyncio.Event = field(default_factory=asyncio.Event)
    """The agent the caller talks with left (another participant leaving is no matter)."""
    agents: list[str] = field(default_factory=list)
    bye: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False
    transcripts: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    loud_at: list[float] = field(default_factory=list)
    speaking: list[bytes] = field(default_factory=list)
    tasks: set[asyncio.Task[object]] = field(default_factory=set)

    def spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def token(api_key: str, api_secret: str, room: str) -> str:
    """A join token for the participant `caller` in the room."""
    jwt: str = (
        api.AccessToken(api_key, api_secret)
        .with_identity(IDENTITY)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )
    return jwt


def tone_pcm(hertz: float, seconds: float) -> bytes:
    """Mono int16 PCM at SAMPLE_RATE of a sine at a third of full scale."""
    step = 2 * math.pi * hertz / SAMPLE_RATE
    samples = (int(10000 * math.sin(step * i)) for i in range(int(seconds * SAMPLE_RATE)))
    return array("h", samples).tobytes()


def is_loud(frame: rtc.AudioFrame) -> bool:
    samples = frame.data
    return len(samples) > 0 and max(max(samples), -min(samples)) > LOUD


async def converse(
    url: str,
    api_key: str,
    api_secret: str,
    room_name: str,
    script: Sequence[Text | Tone | Pause],
    *,
    stay_s: float = 0.0,
) -> Conversation:
    """Say the script's lines in the room, one reply at a time. Then hang up, or, with `stay_s`,
    wait up to that long for the agent to end the call."""
    room, call = rtc.Room(), _Call()
    _listen(room, call)
    try:
        await asyncio.wait_for(
            room.connect(url, token(api_key, api_secret, room_name)), CONNECT_TIMEOUT_S
        )
        await _open_microphone(room, call)
        for participant in room.remote_participants.values():  # the agent was there first
            _joined(call, participant)
        if not await _agent_joined(call):
            return Conversation(
                room=room_name, agent_joined=False, replies=(), agents=(), said_bye=False, cut=True
            )
        replies, done = [], True
        for line in script:
            if isinstance(line, Pause):
                met = len(call.agents)
                line.reached.set()
                await _until_set(line.go_on)
                if line.new_agent and not await _new_agent(room, call, met):
                    done = False
                    break
                continue
            if call.left.is_set():
                done = False
                break
            replies.append(await _say(room, call, line))
        done = done and not call.left.is_set()
        if stay_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.left.wait(), stay_s)
        ended_badly = call.left.is_set() and not call.bye.is_set()
        return Conversation(
            room=room_name,
            agent_joined=True,
            replies=tuple(replies),
            agents=tuple(call.agents),
            said_bye=call.bye.is_set(),
            cut=not done or ended_badly or call.dropped,
        )
    finally:
        for task in list(call.tasks):
            task.cancel()
        await asyncio.gather(*call.tasks, return_exceptions=True)
        await asyncio.wait_for(room.disconnect(), CONNECT_TIMEOUT_S)


async def _agent_joined(call: _Call) -> bool:
    try:
        await asyncio.wait_for(call.joined.wait(), AGENT_JOIN_TIMEOUT_S)
    except TimeoutError:
        return False
    return True


async def _until_set(go_on: threading.Event) -> None:
    """Polled, not waited for in a thread: a cancelled call must leave no thread behind."""
    deadline = time.monotonic() + PAUSE_TIMEOUT_S
    while not go_on.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test did not let the caller go on in {PAUSE_TIMEOUT_S} s")
        await asyncio.sleep(0.1)


async def _new_agent(room: rtc.Room, call: _Call, met: int) -> bool:
    """Until an agent joined after the first `met` is in the room; then it is the one whose
    leaving counts."""
    deadline = time.monotonic() + AGENT_JOIN_TIMEOUT_S
    while time.monotonic() < deadline:
        if len(call.agents) > met and call.agents[-1] in room.remote_participants:
            call.left.clear()  # that was an earlier agent
            return True
        await asyncio.sleep(0.1)
    return False


def _joined(call: _Call, participant: rtc.RemoteParticipant) -> None:
    if participant.identity not in call.agents:  # a dead agent's late leave must not count
        call.agents.append(participant.identity)
        call.joined.set()


def _listen(room: rtc.Room, call: _Call) -> None:
    def on_join(participant: rtc.RemoteParticipant) -> None:
        _joined(call, participant)

    def on_leave(participant: rtc.RemoteParticipant) -> None:
        if call.agents and participant.identity == call.agents[-1]:
            call.left.set()

    def on_data(packet: rtc.DataPacket) -> None:
        if packet.data == b"bye":
            call.bye.set()

    def on_disconnected(reason: object) -> None:  # the caller's own connection, for good
        call.dropped = True
        call.left.set()

    def on_track(
        track: rtc.Track, publication: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            call.spawn(_hear(track, call), f"hear-{who.identity}")

    def on_transcription(reader: rtc.TextStreamReader, identity: str) -> None:
        # the agent also sends the caller's own words (the STT's transcript) on this topic
        if identity != IDENTITY:
            call.spawn(_read(reader, call), f"transcript-{identity}")
        else:
            call.spawn(reader.read_all(), "transcript-of-the-caller")

    room.on("participant_connected", on_join)
    room.on("participant_disconnected", on_leave)
    room.on("data_received", on_data)
    room.on("disconnected", on_disconnected)
    room.on("track_subscribed", on_track)
    room.register_text_stream_handler("lk.transcription", on_transcription)


async def _hear(track: rtc.Track, call: _Call) -> None:
    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
    try:
        async for event in stream:
            if is_loud(event.frame):
                call.loud_at.append(time.monotonic())
    finally:
        await stream.aclose()


async def _read(reader: rtc.TextStreamReader, call: _Call) -> None:
    text = (await reader.read_all()).strip()
    if text:
        call.transcripts.put_nowait(text)


async def _open_microphone(room: rtc.Room, call: _Call) -> None:
    """Publish the caller's microphone: silence, or the tone burst queued in `call.speaking`."""
    source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=MICROPHONE_QUEUE_MS)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await asyncio.wait_for(room.local_participant.publish_track(track, options), CONNECT_TIMEOUT_S)
    samples = int(SAMPLE_RATE * FRAME_S)

    async def speak() -> None:
        pending = b""
        try:
            while True:  # capture_frame waits once its queue is full: real time, frame by frame
                if not pending and call.speaking:
                    pending = call.speaking.pop(0)
                chunk, pending = (
                    pending[: 2 * samples].ljust(2 * samples, b"\0"),
                    pending[2 * samples :],
                )
                await source.capture_frame(rtc.AudioFrame(chunk, SAMPLE_RATE, 1, samples))
        finally:
            await source.aclose()

    call.spawn(speak(), "microphone")


async def _say(room: rtc.Room, call: _Call, line: Text | Tone) -> Reply:
    while not call.transcripts.empty():  # an answer to something earlier is not this one's
        call.transcripts.get_nowait()
    started = time.monotonic()
    if isinstance(line, Text):
        await asyncio.wait_for(
            room.local_participant.send_text(line.text, topic="lk.chat"), CONNECT_TIMEOUT_S
        )
    else:
        call.speaking.append(tone_pcm(line.hertz, TONE_S))
    try:
        text = await asyncio.wait_for(call.transcripts.get(), REPLY_TIMEOUT_S)
    except TimeoutError:
        text = ""
    # the transcript ends with the audio it goes with; what is still on its way arrives soon
    heard_all = time.monotonic()
    while time.monotonic() < started + REPLY_TIMEOUT_S:
        last_sound = max(heard_all, call.loud_at[-1] if call.loud_at else 0.0)
        if time.monotonic() - last_sound >= QUIET_S:
            break
        await asyncio.sleep(0.1)
    loud = sum(1 for at in call.loud_at if at >= started)
    return Reply(said=line, text=text, loud_frames=loud)
