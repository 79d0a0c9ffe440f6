"""Generated inputs: pyramidal slides OpenSlide reads, tissue-like slides, WSI datasets and hostile images."""
