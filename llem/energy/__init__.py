"""Energy meters, the power sampler and the measurement window.

Modules (nothing heavy is imported here or by them at import time):

``window``       ``measure(...)`` / ``MeasurementWindow``: the ``with`` block around a run
``measurement``  ``Measurement``, ``Sample``, ``PhaseMark``, ``DeviceReading`` (frozen data)
``base``         the meter interface, ``Probe``, ``NullMeter``, ``CompositeMeter``, errors
``registry``     meters by name (``llem.meters`` entry points), ``auto`` choice, plugin checks
``sampler``      the background ``llem-sampler`` thread
``baseline``     idle baseline measurement and its per-session cache
``nvml``         NVIDIA GPUs (``NvmlMeter``; listing the GPUs is :mod:`llem.machine`'s job)
``rapl``         Linux powercap RAPL counters (``RaplMeter``)
``estimate``     CPU-time and RAM model (``EstimateMeter``)
``codecarbon``   codecarbon's tracker as a meter (``CodeCarbonMeter``)
``zeus``         Zeus's ``ZeusMonitor`` window as a meter (``ZeusMeter``)
``power_limit``  a GPU power limit for a run, set through NVML and put back
``doctor``       ``doctor()``: what was found and why others were not

See ``docs/energy.md`` for how each number is obtained.
"""
