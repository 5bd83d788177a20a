"""The tuner: a controller that proposes configurations (random, TPE or a language model),
screens them offline, registers the good ones as arms and retires or promotes them; and its
CLI (``python -m tuner``)."""
