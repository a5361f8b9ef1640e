"""User data: VQA records in a JSONL file (:mod:`~quota.data.records`), turned into each model's prompts through
its processor's chat template (:mod:`~quota.data.prompts`) and scored (:mod:`~quota.data.scoring`)."""

from quota.data.records import DataError, Record, load_image, read_records, write_records

__all__ = ["DataError", "Record", "load_image", "read_records", "write_records"]
