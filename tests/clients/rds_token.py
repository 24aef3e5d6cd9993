"""botocore's RDS IAM authentication token (an independent SigV4 implementation), at a fixed time.

Usage: python3 rds_token.py HOST PORT USER REGION EPOCH_SECONDS
Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (test values).
"""

import datetime
import sys

import boto3
import botocore.auth

host, port, user, region, epoch = sys.argv[1:]
fixed = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).replace(tzinfo=None)
botocore.auth.get_current_datetime = lambda *args, **kwargs: fixed
client = boto3.client("rds", region_name=region)
print(client.generate_db_auth_token(DBHostname=host, Port=int(port), DBUsername=user, Region=region))
