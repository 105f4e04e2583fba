"""Recorded and synthetic sessions: one in-memory :class:`Session`, readers for the formats labs use
(MAT/NPZ binned counts, NWB, XDF, torch_brain/temporaldata HDF5) and a synthetic reaching session.

    session = read_session("../shared/data/m1_stevenson_2011.mat", seed=0)
    train, test = session.split(0.8)
    demo = generate_session(n_units=64, duration_s=300.0, seed=0)
"""

from poyo_rt.replay.readers import FORMATS, SessionFormatError, detect_format, read_session
from poyo_rt.replay.session import Session
from poyo_rt.replay.synthetic import generate_session

__all__ = ["Session", "read_session", "detect_format", "SessionFormatError", "FORMATS", "generate_session"]
