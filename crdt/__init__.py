"""The document model on pycrdt: outline and section docs, and the content derived from them.

Pure code: no I/O, no asyncio. Every function here operates on local, well-formed `pycrdt.Doc`
objects; decoding remote updates and mapping pycrdt's errors is the job of the document wrapper.
"""
