"""Pictures of generated molecules: a 2D grid (RDKit), 3D ball-and-stick renders, denoising chains (strip and GIF)
and structure distributions against the reference, written as files by `write_pictures`.

Importing this package imports neither matplotlib nor RDKit's drawing code; each drawing function imports them
when called, and draws on matplotlib's Agg canvas (no pyplot, no global backend).
"""
