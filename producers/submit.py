"""`idolstream submit`: validate image files as submissions and produce them."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from stream.kafka_io import bootstrap_for
from stream.settings import CommonSettings, load_settings

from producers.client import SubmissionClient, submission_from_file


async def submit_files(args: argparse.Namespace) -> int:
    settings = load_settings(CommonSettings)
    submissions = []
    for path in args.images:
        try:
            submissions.append(
                submission_from_file(
                    path, room=args.room, user_id=args.user, display_name=args.name or args.user,
                    text=args.text, kind=args.kind,
                )
            )
        except (OSError, ValueError, ValidationError) as exc:
            print(f"idolstream submit: {path}: {exc}", file=sys.stderr)
            return 2
    async with SubmissionClient(bootstrap_for(settings, start_local=False), settings.topics) as client:
        for path, submission in zip(args.images, submissions):
            partition, offset = await client.submit(submission)
            print(f"{path} -> item {submission.item_id} ({submission.kind}, partition {partition}, offset {offset})")
    return 0
