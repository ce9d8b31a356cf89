"""The survey stage: MaNGA DAP MAPS files and what is known about galaxies without learning.

- :mod:`~ifskeras.survey.lines`: the DAP emission-line catalogues and the paper's 19 lines;
- :mod:`~ifskeras.survey.maps`: the MAPS reader (flux, ivar, valid, found by channel name);
- :mod:`~ifskeras.survey.preprocess`: maps of any size on a fixed S x S grid;
- :mod:`~ifskeras.survey.bpt`: BPT classification and central-aperture line ratios;
- :mod:`~ifskeras.survey.synth`: synthetic MaNGA-like surveys in the DAP MAPS format.

Nothing here imports TensorFlow or another stage of ifskeras.
"""
