"""Images a client sends: header checks before decoding, the decode pool and the fair-share upload store."""
