//! Datasets on disk: a folder of videos plus `captions.jsonl`.
