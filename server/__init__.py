"""The serving side: edge/ (gRPC), engine/ (sessions, scheduler, cache, multi-window objects), models/, slides/ and uploads/ (the images the engine reads)."""
