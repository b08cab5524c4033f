"""Audio in, labelled clips out: reading and resampling audio, dataset layouts and splits,
cached spectrogram features, and the synthetic speech-commands set the demo trains on."""
