"""The paper's audio routing policy as a pure function: which audio a clip ships, and why.

`route(inputs, policy)` reads the audio signals of one clip and returns an `AudioDecision`
(pool, action, keep, reasons). No I/O, no models: the `audio` decision stage calls it per row.

The policy, with the paper's thresholds (`AudioPolicy` defaults):

* no audio track, or silent audio (non-silence needs ``max_abs >= 0.007`` and
  ``p50_db >= -80`` and ``active_ratio >= 0.2``): pool ``none``, the clip stays a video sample;
* ``speech_synced = has_face and lip_sync_confidence >= 3.0``; ``high_music = music_ratio >= 0.1``;
* speech branch (speech_synced): keep the original, unless high_music and not an instrument:
  then remove the music and re-check ``speech_ratio >= 0.05`` and ``music_ratio == 0``;
* non-speech branch: a vocal-suppressed stem when ``speech_ratio >= 0.05``, music removal when
  high_music and not an instrument, then re-check ``speech_ratio < 0.05`` and ``music_ratio``
  ``== 0`` after music removal, ``< 0.1`` otherwise (so, read literally, a non-speech clip of an
  instrument with high music fails the re-check: nothing removed its music);
* non-silence is re-checked on every processed stem too.

Missing inputs (no lip-sync model for a clip with a face, no music flag, ...) give pool
``undetermined``, keep None: not a rejection. A route that needs a separated stem while no
source separation ran gives keep None and the reason ``needs_separation``: never silently kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# stems a source separator provides (their metrics are re-measured by `audio_signals`)
NO_MUSIC = "no_music"  # music removed: vocals + other
NO_VOCALS = "no_vocals"  # vocals suppressed: music + other
EFFECTS = "effects"  # both removed: other only
STEMS = (NO_MUSIC, NO_VOCALS, EFFECTS)


@dataclass(frozen=True)
class AudioMetrics:
    """Signals of one waveform (the original track or a separated stem); None = not measured."""

    max_abs: float | None = None
    p50_db: float | None = None
    active_ratio: float | None = None
    speech_ratio: float | None = None
    music_ratio: float | None = None


@dataclass(frozen=True)
class AudioInputs:
    has_audio: bool | None
    original: AudioMetrics
    has_face: bool | None = None
    lip_sync_confidence: float | None = None
    is_music_instrument: bool | None = None
    stems: dict[str, AudioMetrics | None] = field(default_factory=dict)


@dataclass(frozen=True)
class AudioPolicy:
    """Thresholds (the paper's); the `audio` stage reads them from the recipe."""

    min_max_abs: float = 0.007
    min_p50_db: float = -80.0
    min_active_ratio: float = 0.2
    min_lip_sync: float = 3.0
    high_music: float = 0.1
    speech: float = 0.05  # speech_ratio at or above: speech present
    music_zero: float = 0.0  # "music_ratio = 0" after music removal: at most this


@dataclass(frozen=True)
class AudioDecision:
    pool: str  # none | undetermined | speech | non_speech
    action: (
        str  # none | keep_original | remove_music | suppress_vocals | suppress_vocals+remove_music
    )
    keep: bool | None  # None: undetermined or waiting for source separation
    reasons: list[str] = field(default_factory=list)


def silence_reasons(m: AudioMetrics, p: AudioPolicy, where: str = "") -> list[str] | None:
    """Why `m` is silent ([] = not silent); None when a non-silence input is missing."""
    if m.max_abs is None or m.p50_db is None or m.active_ratio is None:
        return None
    out = []
    if not m.max_abs >= p.min_max_abs:
        out.append(f"silent:max_abs{where}")
    if not m.p50_db >= p.min_p50_db:
        out.append(f"silent:p50_db{where}")
    if not m.active_ratio >= p.min_active_ratio:
        out.append(f"silent:active_ratio{where}")
    return out


def route(x: AudioInputs, p: AudioPolicy | None = None) -> AudioDecision:
    """Route one clip's audio (see the module docstring for the policy)."""
    p = p or AudioPolicy()
    if x.has_audio is None:
        return AudioDecision("undetermined", "none", None, ["missing:has_audio"])
    if not x.has_audio:
        return AudioDecision("none", "none", False, ["no_audio_track"])
    silent = silence_reasons(x.original, p)
    if silent is None:
        return AudioDecision("undetermined", "none", None, ["missing:non_silence"])
    if silent:
        return AudioDecision("none", "none", False, silent)

    o = x.original
    missing = [n for n in ("speech_ratio", "music_ratio") if getattr(o, n) is None]
    if x.has_face is None:
        missing.append("has_face")
    elif x.has_face and x.lip_sync_confidence is None:
        missing.append("lip_sync_confidence")
    high_music = o.music_ratio is not None and o.music_ratio >= p.high_music
    if high_music and x.is_music_instrument is None:
        missing.append("is_music_instrument")
    if missing:
        return AudioDecision("undetermined", "none", None, [f"missing:{n}" for n in missing])

    remove_music = high_music and not x.is_music_instrument
    speech_synced = bool(x.has_face) and x.lip_sync_confidence >= p.min_lip_sync
    if speech_synced:
        if not remove_music:
            return AudioDecision("speech", "keep_original", True)
        return _recheck("speech", "remove_music", x.stems.get(NO_MUSIC), p, speech=True)

    suppress = o.speech_ratio >= p.speech
    if suppress and remove_music:
        action, stem = "suppress_vocals+remove_music", EFFECTS
    elif suppress:
        action, stem = "suppress_vocals", NO_VOCALS
    elif remove_music:
        action, stem = "remove_music", NO_MUSIC
    else:
        action, stem = "keep_original", None
    m = o if stem is None else x.stems.get(stem)
    return _recheck("non_speech", action, m, p, speech=False, music_removed=remove_music)


def _recheck(
    pool: str,
    action: str,
    m: AudioMetrics | None,
    p: AudioPolicy,
    *,
    speech: bool,
    music_removed: bool = True,
) -> AudioDecision:
    """Re-check the audio a route ships (the original or a separated stem)."""
    if m is None:
        return AudioDecision(pool, action, None, [f"needs_separation@{action}"])
    where = "" if action == "keep_original" else f"@{action}"
    reasons = silence_reasons(m, p, where)
    if reasons is None or m.speech_ratio is None or m.music_ratio is None:
        return AudioDecision(pool, action, None, [f"missing:stem_metrics{where}"])
    if speech and not m.speech_ratio >= p.speech:
        reasons.append(f"no_speech{where}")
    if not speech and not m.speech_ratio < p.speech:
        reasons.append(f"speech_left{where}")
    if music_removed and not m.music_ratio <= p.music_zero:
        reasons.append(f"music_left{where}")
    if not music_removed and not m.music_ratio < p.high_music:
        reasons.append(f"high_music{where}")
    return AudioDecision(pool, action, not reasons, reasons)
