"""Functions for the python_file_mapper vectors."""


def process_single(sample):
    text = sample["text"]
    return {"text": " ".join(text.split()), "words": len(text.split())}


def title_batch(batch):
    return {"text": [t.title() for t in batch["text"]]}
