"""A clinical-size preset of the synthetic course: what a planning CT of the thorax looks like.

``REALISTIC`` is a 512 x 512 CT of 0.977 mm pixels (a 500 mm field of view) with 160 slices of
2.5 mm (a 400 mm scan length), the matrix, pixel size and slice spacing of a typical
radiotherapy planning CT. The phantom scales with the field (``make_phantom``), so the body is
400 x 280 mm across, as an adult thorax is. The RTDOSE of this preset has about 2.9 mm pixels and
2.5 mm frames (``rtdose.dose_grid``), as treatment planning systems export it.

Use it where size matters (timings, memory, resampling to the 1.5 mm segmentation grid); tests
of logic keep the small default. ``rtpipeline synth --realistic`` selects it.
"""

from __future__ import annotations

from .options import SynthOptions

#: 512 x 512 x 160 CT, 0.977 mm pixels, 2.5 mm slices (500 mm field, 400 mm scan length)
REALISTIC = SynthOptions(rows=512, slices=160, pixel_mm=0.977, slice_mm=2.5)
