"""Frame-accurate movie reading and ProRes 4444 writing through PyAV (FFmpeg).

Frame numbering: frame k is the k-th frame in presentation order, counting from 0.
Timecode is not honoured (a movie with timecode 01:00:00:00 still starts at frame 0).

How reads stay frame-accurate: opening a movie demuxes every packet once (no decoding)
to list the presentation timestamps; frame k is the k-th smallest. A read decodes on from
the previous frame when k is just ahead, otherwise seeks to the last keyframe at or
before k and decodes forward until the frame whose timestamp is exactly k's. Frames that
come out before that keyframe (open-GOP leading pictures, possibly broken) are never
used. If timestamps cannot be trusted the reader decodes from the start and counts.
The cost: opening reads the whole file once (about a second per GB).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Colorspace

from howard_core.errors import HowardError
from howard_core.io.atomic import publish, temp_path_for

MOVIE_EXTS = {".mp4", ".mov", ".mxf", ".avi", ".mkv", ".m4v", ".webm"}
# Decoding on is cheaper than seeking back to a keyframe for a gap this small.
_MAX_FORWARD_GAP = 12
_UNSPECIFIED = 2  # AVCOL_SPC_UNSPECIFIED
# PyAV 17+ slices pixel-format conversion over threads by default; with widths that are not a
# multiple of 16 that corrupted whole rows at slice seams here (seen on 37-, 65-, 145-pixel
# widths, at random). One thread is exact, and the pipeline parallelises across frames anyway.
_SWS_THREADS = 1


def is_movie(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in MOVIE_EXTS


def _open_container(path: Path):
    if not path.is_file():
        raise HowardError(f"{path}: movie not found; check the path")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise HowardError(
            f"{path}: not a readable movie ({exc}); the file may be corrupt or half-copied, re-export it"
        ) from exc
    if not container.streams.video:
        container.close()
        raise HowardError(f"{path}: has no video stream; give a movie with picture")
    return container


class MovieReader:
    """Random access to a movie's frames as HxWx3 float32 RGB 0..1 (the file's encoding).

    Not thread-safe on its own; `MovieSource` serialises calls with a lock.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        container = _open_container(self.path)
        try:
            stream = container.streams.video[0]
            self.width = stream.codec_context.width
            self.height = stream.codec_context.height
            self.fps: Fraction | None = stream.average_rate or stream.guessed_rate
            pts, keys = [], []
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                ts = packet.pts if packet.pts is not None else packet.dts
                if packet.is_keyframe:
                    keys.append((ts, packet.dts if packet.dts is not None else ts))
                # Edit lists mark lead-in packets to decode but never show; they are not frames.
                if not packet.is_discard:
                    pts.append(ts)
        except av.FFmpegError as exc:
            raise HowardError(f"{self.path}: movie cannot be indexed ({exc}); re-export it") from exc
        finally:
            container.close()
        if not pts:
            raise HowardError(f"{self.path}: movie has no video frames; re-export it")
        self._trusted = None not in pts and len(set(pts)) == len(pts)
        self._pts = sorted(pts) if self._trusted else list(range(len(pts)))
        self._index = {p: i for i, p in enumerate(self._pts)}
        self._keys = sorted(k for k in keys if self._trusted and None not in k)
        self._container = None
        self._frames = None
        self._next = 0  # index of the frame self._frames yields next

    def __len__(self) -> int:
        return len(self._pts)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._frames = None

    def frame(self, k: int) -> np.ndarray:
        """Frame k (0-based) as HxWx3 float32 in 0..1."""
        if not 0 <= k < len(self._pts):
            raise HowardError(f"{self.path}: frame {k} is outside the movie (frames 0-{len(self._pts) - 1})")
        try:
            decoded = None
            if self._frames is not None and 0 <= k - self._next <= _MAX_FORWARD_GAP:
                decoded = self._decode_forward(k, floor=None)
            if decoded is None and self._trusted:
                decoded = self._seek_and_decode(k)
            if decoded is None:
                decoded = self._count_from_start(k)
        except av.FFmpegError as exc:
            raise HowardError(f"{self.path}: frame {k} cannot be decoded ({exc}); the movie may be corrupt") from exc
        if decoded is None:
            raise HowardError(f"{self.path}: frame {k} could not be decoded; the movie may be truncated or corrupt")
        return _to_rgb(decoded)

    def _restart(self):
        self.close()
        self._container = _open_container(self.path)
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._frames = self._container.decode(stream)
        self._next = 0
        return stream

    def _decode_forward(self, k: int, floor: int | None):
        """Decode until frame k. Frames with pts < floor are skipped as untrustworthy.

        Returns None when the stream ends, or timestamps show the decoder is not where
        the bookkeeping thinks (the caller then seeks or counts instead).
        """
        target = self._pts[k]
        for frame in self._frames:
            if not self._trusted:
                if self._next == k:
                    self._next += 1
                    return frame
                self._next += 1
                continue
            if frame.pts is None or frame.pts not in self._index:
                self._frames = None
                return None
            if floor is not None and frame.pts < floor:
                continue
            self._next = self._index[frame.pts] + 1
            if frame.pts == target:
                return frame
            if frame.pts > target:
                self._frames = None
                return None
        self._frames = None
        return None

    def _seek_and_decode(self, k: int):
        target = self._pts[k]
        # Latest keyframe first; if the demuxer lands past it, try the one before.
        candidates = [key for key in self._keys if key[0] <= target][::-1][:3]
        for key_pts, key_dts in candidates:
            if self._container is None:
                self._restart()
            stream = self._container.streams.video[0]
            self._container.seek(min(key_pts, key_dts), stream=stream, backward=True, any_frame=False)
            self._frames = self._container.decode(stream)
            frame = self._decode_forward(k, floor=key_pts)
            if frame is not None:
                return frame
        return None

    def _count_from_start(self, k: int):
        self._restart()
        trusted, self._trusted = self._trusted, False
        try:
            return self._decode_forward(k, floor=None)
        finally:
            self._trusted = trusted
            # Counting left no timestamps to resume from; the next read starts clean.
            self._frames = None if trusted else self._frames


def _to_rgb(frame) -> np.ndarray:
    # Untagged video: assume BT.709 for HD and larger, BT.601 below, as players do.
    src = None
    if frame.colorspace == _UNSPECIFIED:
        src = Colorspace.ITU709 if frame.height >= 720 else Colorspace.ITU601
    rgb = frame.to_ndarray(format="rgb48le", src_colorspace=src, threads=_SWS_THREADS)
    # One pass to float (a cast then a division made two, and an HD temporary): within 1 ulp of v / 65535.
    return np.multiply(rgb, np.float32(1 / 65535), dtype=np.float32)


class ProResWriter:
    """Writes RGBA frames into a ProRes 4444 .mov, atomically.

    Frames go to a hidden temp file next to the target; `finish()` renames it into
    place, `abort()` deletes it. RGB is stored as BT.709 Y'CbCr 10-bit, alpha 16-bit.
    """

    def __init__(self, path: str | os.PathLike, fps: Fraction):
        if "prores_ks" not in av.codecs_available:
            raise HowardError(
                f"{path}: this FFmpeg build (PyAV {av.__version__}) has no ProRes encoder (prores_ks); "
                f"write an EXR or PNG sequence instead"
            )
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001 * 1000)
        self._tmp = temp_path_for(self.path)
        self._container = None
        self._stream = None
        self.frames_written = 0

    def write(self, rgba: np.ndarray) -> None:
        """Append one frame: HxWx4 float32 0..1 straight RGBA, display-referred."""
        h, w = rgba.shape[:2]
        if self._container is None:
            self._container = av.open(str(self._tmp), "w", format="mov")
            stream = self._container.add_stream("prores_ks", rate=self.fps)
            stream.width, stream.height = w, h
            stream.pix_fmt = "yuva444p10le"
            stream.options = {"profile": "4444", "alpha_bits": "16", "vendor": "apl0"}
            cc = stream.codec_context
            cc.colorspace = cc.color_primaries = cc.color_trc = 1  # BT.709 tags
            self._stream = stream
        elif (w, h) != (self._stream.width, self._stream.height):
            raise HowardError(
                f"{self.path}: frame is {w}x{h} but the movie is {self._stream.width}x{self._stream.height}; "
                f"all frames of a movie must be the same size"
            )
        data = np.round(np.clip(rgba, 0.0, 1.0) * 65535.0).astype(np.uint16)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(data), format="rgba64le")
        frame = frame.reformat(format="yuva444p10le", dst_colorspace=Colorspace.ITU709, threads=_SWS_THREADS)
        frame.colorspace = 1
        frame.pts = self.frames_written
        frame.time_base = 1 / self.fps
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def finish(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
            publish(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except av.FFmpegError:
                pass  # the temp file is deleted next; a failed trailer does not matter
            self._container = None
        if self._tmp.exists():
            self._tmp.unlink()
