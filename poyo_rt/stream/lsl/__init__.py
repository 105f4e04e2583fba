"""LSL input: the only package of poyo-rt that imports :mod:`pylsl`.

One module per concept, in the order a stream meets them:

- :mod:`.config`: :func:`configure_lsl` applies liblsl's configuration once per process, before any other
  LSL call. By default the packaged ``loopback.cfg`` (machine-scope discovery, loopback peer only, no IPv6),
  so no discovery packet leaves the machine. Every function here calls it implicitly. :func:`local_clock`.
- :mod:`.discovery`: :func:`resolve_stream` finds exactly one stream by name / type / source_id, or raises
  a clear error listing the streams that are visible; :func:`list_streams` and :func:`inspect_stream` list
  every visible stream and how the inlet would read it (``poyo-rt streams``).
- :mod:`.layout`: what a spike stream's info and ``<desc>`` declare (events or counts, columns, unit list),
  checked once at open.
- :mod:`.inlet`: :class:`SpikeInlet` pulls spike events or binned counts, returns ``(spike_times_s,
  unit_index)`` on this machine's :func:`local_clock`, drops and counts bad samples (:data:`DROP_REASONS`),
  survives an outlet restart.
- :mod:`.outlets`: :func:`make_spike_outlet`, an outlet whose ``<desc>`` carries the unit list the inlet
  reads, :func:`make_behavior_outlet` (replay) and :class:`DecodedOutlet` (the decoder's output, recordable).
- :func:`match_units` (re-exported from :mod:`poyo_rt.stream.units`): stream unit -> vocabulary index.

Importing this package loads liblsl (pylsl's import only reads the library version); liblsl reads its
configuration lazily at the first real LSL call, which is why :func:`configure_lsl` must come first.
"""

from poyo_rt.stream.lsl.config import configure_lsl, local_clock, lsl_config_description, packaged_config_path
from poyo_rt.stream.lsl.discovery import StreamReport, inspect_stream, list_streams, resolve_stream
from poyo_rt.stream.lsl.inlet import DROP_REASONS, SpikeInlet, open_spike_inlet
from poyo_rt.stream.lsl.outlets import DecodedOutlet, make_behavior_outlet, make_spike_outlet
from poyo_rt.stream.units import match_units

__all__ = [
    "DROP_REASONS",
    "DecodedOutlet",
    "SpikeInlet",
    "StreamReport",
    "configure_lsl",
    "inspect_stream",
    "list_streams",
    "local_clock",
    "lsl_config_description",
    "make_behavior_outlet",
    "make_spike_outlet",
    "match_units",
    "open_spike_inlet",
    "packaged_config_path",
    "resolve_stream",
]
