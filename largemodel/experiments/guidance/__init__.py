"""Guidance as a study axis on the class-conditional digits model trained here (issue 27, item 4; docs/theory.md §10.9).

:mod:`.experiment` measures (``GuidanceOptions``, ``run``); :mod:`.judge` decides, on intervals, whether
``W`` raises the reconstruction error, and runs the same judge on the null prompt, where it cannot.
"""
