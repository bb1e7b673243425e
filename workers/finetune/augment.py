"""On-the-fly augmentation of training clips: speed perturbation, random gain, additive noise at an SNR.

Training clips only: the loader hands an `Augmenter` to the training batches alone, and it acts only on
planned batches that carry a seed per clip (shards.batching.plan_batches(seed_clips=True)), which
evaluation plans never do. Each clip's augmentation is a function of its own seed, drawn from the
epoch's rng, so a trial (and a resumed one) sees the same audio for the same seed, however its batches
are cut into micro-batches or shared between data-parallel workers.

Per clip, after the crop (so a speed-perturbed crop is max_seconds / speed long):

    speed  x0.9, x1.0 or x1.1, one at random, by resampling 16 kHz audio to 16 kHz / speed with soxr and
           playing it back at 16 kHz: the length changes by 1 / speed and pitch with it, as Kaldi's and
           SpeechBrain's speed perturbation do (a 3-way copy of the data in Kaldi; here a fresh draw).
    gain   uniform in gain_db (dB); samples clip at int16 full scale. The encoders normalise each clip
           to zero mean and unit variance, so gain only matters where it saturates (and for the noise's
           level, which follows the speech's power: the SNR is what is asked whatever the gain).
    noise  at an SNR uniform in noise_snr_db (dB, speech power over noise power, both over the whole
           clip): a random stretch of coloured noise generated here (white, pink or brown, with equal
           odds), or of a random clip of a noise corpus (a shard directory: noise_path).

The rule for caches: augmented training audio differs every epoch, so no cache of training features
(the head-only stage's, a front end's) may be read while augmentation is on: `cache_blocker`.
"""

from __future__ import annotations

import numpy as np

from shards.schema import SAMPLE_RATE

SPEEDS = (0.9, 1.0, 1.1)
# Power spectral density ~ 1 / f^exponent: white, pink, brown (red) noise.
NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
INT16_MIN, INT16_MAX = -32768, 32767


KNOBS = ("speed_perturb", "noise_snr_db", "gain_db")  # each off when False or None


def knobs_on(cfg) -> list[str]:
    """The augmentation knobs a trial config (workers.finetune.config.TrialConfig) turns on."""
    return [name for name in KNOBS if getattr(cfg, name) not in (None, False)]


def augmenting(cfg) -> bool:
    """Whether a trial config augments its training clips."""
    return bool(knobs_on(cfg))


def cache_blocker(cfg) -> str | None:
    """THE rule: augmentation on -> no cached training features. Why a cache of features computed from
    training audio must not be read (None: augmentation does not forbid it). Every such cache asks this."""
    on = knobs_on(cfg)
    return f"augmentation ({', '.join(on)}) changes the training audio every epoch" if on else None


def speed_perturb(clip: np.ndarray, speed: float) -> np.ndarray:
    """float32 samples played `speed` times faster: resampled to SAMPLE_RATE / speed (length x 1 / speed)."""
    if speed == 1.0 or len(clip) == 0:
        return clip
    import soxr

    return soxr.resample(clip, SAMPLE_RATE, SAMPLE_RATE / speed).astype(np.float32, copy=False)


def coloured_noise(num_samples: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-power float32 noise whose power spectrum falls as 1 / f^exponent (0 white, 1 pink, 2 brown).

    Shaped in the frequency domain in float32 at the next FFT-friendly length, then cut (numpy's FFT of a
    length with a large prime factor took 17 ms for 1.8 s, scipy's float32 one at a fast length 0.2 ms).
    """
    if not exponent or num_samples <= 1:
        white = rng.standard_normal(num_samples, dtype=np.float32)
    else:
        import scipy.fft

        size = scipy.fft.next_fast_len(num_samples, real=True)
        spectrum = scipy.fft.rfft(rng.standard_normal(size, dtype=np.float32))
        frequencies = np.fft.rfftfreq(size)
        shape = np.zeros(len(frequencies), dtype=np.float32)  # 0 at DC
        shape[1:] = frequencies[1:] ** (-exponent / 2)  # amplitude ~ f^(-exponent/2): power ~ f^-exponent
        spectrum *= shape
        white = scipy.fft.irfft(spectrum, size)[:num_samples]
        white -= white.mean()
    power = float(np.mean(np.square(white, dtype=np.float64)))
    return (white / np.sqrt(power) if power > 0 else white).astype(np.float32)


def add_noise(clip: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`clip` + `noise` scaled so that mean(clip^2) / mean(scaled noise^2) is `snr_db` in dB."""
    speech_power = float(np.mean(np.square(clip, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    if speech_power == 0 or noise_power == 0:  # silence has no SNR to keep; flat noise adds nothing
        return clip
    scale = np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    return (clip + scale * noise).astype(np.float32)


def to_int16(clip: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(clip), INT16_MIN, INT16_MAX).astype(np.int16)


class ColouredNoise:
    """White, pink and brown noise, `BANK_SECONDS` of each generated once (fixed seed) on first use; a clip
    gets a random stretch of a random colour. Stationary noise: a stretch of the bank is as good as fresh
    noise, and costs a slice instead of an FFT pair (2 ms of a 1.8 s clip's loader time, `python -m bench`)."""

    BANK_SECONDS = 30.0

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._bank: list[np.ndarray] | None = None

    @property
    def bank(self) -> list[np.ndarray]:
        if self._bank is None:
            rng = np.random.default_rng(self.seed)
            size = int(self.BANK_SECONDS * SAMPLE_RATE)
            self._bank = [coloured_noise(size, exponent, rng) for exponent in NOISE_EXPONENTS.values()]
        return self._bank

    def stretch(self, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """`num_samples` of a random colour from a random offset (a clip longer than the bank repeats it)."""
        return _stretch(self.bank[int(rng.integers(len(self.bank)))], num_samples, rng)


def _stretch(clip: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    if len(clip) < num_samples:
        clip = np.tile(clip, -(-num_samples // max(len(clip), 1)))
    start = int(rng.integers(0, len(clip) - num_samples + 1))
    return clip[start : start + num_samples]


class NoiseCorpus:
    """Noise clips from a shard directory (any ingested corpus), opened on first use."""

    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self._reader = None

    @property
    def reader(self):
        if self._reader is None:
            from shards.reader import open_reader

            self._reader = open_reader(self.data_dir)
            if len(self._reader) == 0:
                raise ValueError(f"noise corpus {self.data_dir} holds no clips")
        return self._reader

    def stretch(self, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        """`num_samples` of a random clip from a random offset (a short clip repeats)."""
        clip = np.asarray(self.reader.audio(int(rng.integers(len(self.reader)))), dtype=np.float32)
        return _stretch(clip, num_samples, rng)


class Augmenter:
    """The per-clip transform of training audio (shards.batching.ClipTransform): int16 clip, seed -> int16 clip.

    Every draw is made for every clip whichever knobs are on, in a fixed order, so turning one knob on
    leaves the draws of the others as they were.
    """

    def __init__(
        self,
        speed_perturb: bool = False,
        noise_snr_db: tuple[float, float] | None = None,
        gain_db: tuple[float, float] | None = None,
        noise_path: str = "",
    ):
        self.speed_perturb = speed_perturb
        self.noise_snr_db = None if noise_snr_db is None else (float(noise_snr_db[0]), float(noise_snr_db[1]))
        self.gain_db = None if gain_db is None else (float(gain_db[0]), float(gain_db[1]))
        self.noise = NoiseCorpus(noise_path) if noise_path else ColouredNoise()

    @classmethod
    def from_config(cls, cfg) -> Augmenter | None:
        """The trial's augmenter, None when it augments nothing."""
        if not augmenting(cfg):
            return None
        return cls(cfg.speed_perturb, cfg.noise_snr_db, cfg.gain_db, cfg.noise_path)

    def __call__(self, clip: np.ndarray, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        speed = SPEEDS[int(rng.integers(len(SPEEDS)))]
        gain_u, snr_u = rng.random(2)
        noise_rng = np.random.default_rng(rng.integers(0, 2**63))
        audio = clip.astype(np.float32)
        if self.speed_perturb:
            audio = speed_perturb(audio, speed)
        if self.gain_db is not None:
            low, high = self.gain_db
            audio = np.clip(audio * 10 ** ((low + gain_u * (high - low)) / 20), INT16_MIN, INT16_MAX)
        if self.noise_snr_db is not None:
            low, high = self.noise_snr_db
            audio = add_noise(audio, self.noise.stretch(len(audio), noise_rng), low + snr_u * (high - low))
        return to_int16(audio)
