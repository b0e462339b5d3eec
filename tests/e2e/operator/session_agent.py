"""A real livekit-agents voice agent for the e2e tests: an `Agent` in an `AgentSession`.

Run by the official worker's own interpreter (livekit-agents from PyPI, never this project's venv)
as `python session_agent.py start` (or `dev`) with cwd tests/e2e/operator: it imports nothing of
this project, and `operator/` at the repository root cannot shadow the standard library.

It is written the way LiveKit's docs teach: an `AgentServer`, an `@server.rtc_session`, an
`AgentSession` with an STT, an LLM and a TTS. Those three are small fakes written here against
livekit-agents' own base classes, so a call needs no network and no model:

- `ToneSTT`: a streaming STT that hears energy. A burst of sound is speech: START_OF_SPEECH, then,
  after END_SILENCE_S of quiet, FINAL_TRANSCRIPT "a <hz> hertz tone" (the burst's pitch) and
  END_OF_SPEECH, which ends the user's turn (turn_detection="stt", no VAD).
- `EchoLLM`: answers "you said: <the user's last message>", word by word.
- `ToneTTS`: a 24 kHz mono tone whose length follows the text.

A caller can type (the `lk.chat` text stream) or speak (a tone burst on a microphone track) and
hears the answer as audio and as a transcription (`lk.transcription`). Like `call_agent`, a
dispatch's metadata says how long the call lasts (`hold_s`, from the session's start) and where to
record it (`ledger`); the call records its start and its end, with how it ended: `completed` after
hold_s (the agent says "bye" on the data channel, then leaves), `caller-left` when the caller hung
up first, `shutdown` when the worker ended it. The agent name comes from AGENT_NAME when set; the
host and port are left to livekit-agents (or to whatever applies the pod's options). The load is
`official_agent`'s, the share of 4 calls in use (a `load_fnc`, as many voice agents set one), so
calls drive the autoscaler on a shared test machine as they would by CPU on a real node.

One file for livekit-agents 1.4, 1.6 and 1.8, without version checks: every API used here is in
all three. `turn_detection="stt"` goes to the `Agent`, which takes it without a deprecation
warning on every line (AgentSession's `turn_detection` is deprecated since 1.6 in favour of
`turn_handling`, which 1.4 lacks).
"""

# livekit-agents is not installed where mypy runs (livekit.* resolves to Any there), so the fakes
# subclass Any and the rtc_session decorator is untyped; everything else is checked.
# mypy: allow-subclassing-any, allow-untyped-decorators

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
from array import array
from typing import Any

from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    Agent,
    AgentServer,
    AgentSession,
    APIConnectOptions,
    CloseEvent,
    CloseReason,
    JobContext,
    NotGivenOr,
    cli,
    llm,
    stt,
    tts,
    utils,
)
from official_agent import load, record  # type: ignore[import-not-found]

MAX_HOLD_S = 600.0
LOUD = 2000
"""Peak amplitude (int16) above which a frame is sound, not silence (Opus keeps silence near 0)."""
END_SILENCE_S = 0.3
"""Quiet that ends an utterance."""
TTS_SAMPLE_RATE = 24000
TTS_TONE_HZ = 300.0
TTS_S_PER_CHAR = 0.05
TTS_MAX_S = 5.0


class ToneSTT(stt.STT):
    """Hears tone bursts: each one becomes a final transcript naming its pitch."""

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=False))

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        pitch = _Pitch()
        for frame in buffer if isinstance(buffer, list) else [buffer]:
            pitch.add(frame)
        return _final(pitch.text())

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return _ToneRecognition(stt=self, conn_options=conn_options)


class _Pitch:
    """The rising crossings of one burst, with hysteresis so that noise near 0 never counts; the
    pitch is from the median time between two of them, so that audio lost or concealed on a
    loaded machine (one long gap, or a few short ones) does not move it."""

    def __init__(self) -> None:
        self.sample_rate = 0
        self.position = 0
        self.crossings: list[int] = []
        self.armed = False

    def add(self, frame: rtc.AudioFrame) -> None:
        self.sample_rate = frame.sample_rate
        for index, sample in enumerate(frame.data):
            if sample < -LOUD // 2:
                self.armed = True
            elif sample > LOUD // 2 and self.armed:
                self.armed = False
                self.crossings.append(self.position + index)
        self.position += frame.samples_per_channel

    def text(self) -> str:
        if len(self.crossings) < 2:
            return "a click"
        periods = [b - a for a, b in zip(self.crossings, self.crossings[1:], strict=False)]
        hertz = self.sample_rate / statistics.median(periods)
        return f"a {round(hertz / 10) * 10} hertz tone"


def _final(text: str) -> stt.SpeechEvent:
    return stt.SpeechEvent(
        type=stt.SpeechEventType.FINAL_TRANSCRIPT,
        alternatives=[stt.SpeechData(language="en", text=text, confidence=1.0)],
    )


def _is_loud(frame: rtc.AudioFrame) -> bool:
    samples = frame.data
    return len(samples) > 0 and max(max(samples), -min(samples)) > LOUD


class _ToneRecognition(stt.RecognizeStream):
    async def _run(self) -> None:
        pitch: _Pitch | None = None
        quiet_s = 0.0
        async for frame in self._input_ch:
            if not isinstance(frame, rtc.AudioFrame):  # a flush: utterances end on silence only
                continue
            if _is_loud(frame):
                if pitch is None:
                    pitch = _Pitch()
                    self._event_ch.send_nowait(
                        stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH)
                    )
                quiet_s = 0.0
            elif pitch is not None:
                quiet_s += frame.samples_per_channel / frame.sample_rate
            if pitch is None:
                continue
            pitch.add(frame)
            if quiet_s >= END_SILENCE_S:
                self._event_ch.send_nowait(_final(pitch.text()))
                self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH))
                pitch = None


class EchoLLM(llm.LLM):
    """Answers "you said: " and the user's last message."""

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return _Echo(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _Echo(llm.LLMStream):
    async def _run(self) -> None:
        said = ""
        for item in self.chat_ctx.items:
            if getattr(item, "type", "") == "message" and item.role == "user":
                said = item.text_content or ""
        request_id = utils.shortuuid("echo_")
        for word in f"you said: {said}".split():
            delta = llm.ChoiceDelta(role="assistant", content=word + " ")
            self._event_ch.send_nowait(llm.ChatChunk(id=request_id, delta=delta))


class ToneTTS(tts.TTS):
    """Speaks any text as a tone, TTS_S_PER_CHAR seconds a character."""

    def __init__(self) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=TTS_SAMPLE_RATE,
            num_channels=1,
        )

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _ToneSpeech(tts=self, input_text=text, conn_options=conn_options)


class _ToneSpeech(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid("tone_"),
            sample_rate=TTS_SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        seconds = min(TTS_MAX_S, max(0.2, len(self.input_text) * TTS_S_PER_CHAR))
        output_emitter.push(tone_pcm(TTS_TONE_HZ, seconds, TTS_SAMPLE_RATE))
        output_emitter.flush()


def tone_pcm(hertz: float, seconds: float, sample_rate: int) -> bytes:
    """Mono int16 PCM of a sine at a third of full scale."""
    step = 2 * math.pi * hertz / sample_rate
    samples = (int(10000 * math.sin(step * i)) for i in range(int(seconds * sample_rate)))
    return array("h", samples).tobytes()


server = AgentServer()
server.load_fnc = load


@server.rtc_session(agent_name=os.environ.get("AGENT_NAME", ""))
async def conversation(ctx: JobContext) -> None:
    meta = json.loads(ctx.job.metadata or "{}")
    ledger, room = str(meta.get("ledger", "")), ctx.job.room.name
    hold_s = min(float(meta.get("hold_s", 30)), MAX_HOLD_S)
    ending = {"how": "shutdown"}

    async def on_shutdown(reason: str) -> None:
        record(ledger, event="end", room=room, how=ending["how"], reason=reason)

    ctx.add_shutdown_callback(on_shutdown)
    record(ledger, event="start", room=room, real=bool(meta.get("real")))
    # vad=None: since 1.6 an AgentSession without one loads the bundled silero VAD model
    session = AgentSession(stt=ToneSTT(), llm=EchoLLM(), tts=ToneTTS(), vad=None)
    closed: asyncio.Future[CloseEvent] = asyncio.get_running_loop().create_future()

    def on_close(event: CloseEvent) -> None:
        if not closed.done():
            closed.set_result(event)

    session.on("close", on_close)
    agent = Agent(instructions="Repeat what the caller said.", turn_detection="stt")
    await session.start(agent=agent, room=ctx.room)
    try:
        event = await asyncio.wait_for(closed, hold_s)
    except TimeoutError:
        ending["how"] = "completed"
        # the caller counts a call that ends without "bye" as cut
        await ctx.room.local_participant.publish_data(b"bye", reliable=True)
        await asyncio.sleep(0.5)
        await session.aclose()
    else:  # the session closed itself: the caller hung up, or it failed
        hung_up = event.reason == CloseReason.PARTICIPANT_DISCONNECTED
        ending["how"] = "caller-left" if hung_up else "shutdown"
    ctx.shutdown(ending["how"])


if __name__ == "__main__":
    cli.run_app(server)
