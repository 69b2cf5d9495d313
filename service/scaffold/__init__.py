"""Templates for `handshake init`: a starting policy and a test suite that passes."""
