"""AWS-side fixtures and checks for the moto tests, through boto3 (an independent AWS client).

Usage: python3 moto_fixture.py ENDPOINT COMMAND ARGS...
  upload-code BUCKET KEY          create the bucket and put a Lambda zip holding `bootstrap`
  tagged KEY VALUE                print a JSON list of the ARNs tagged KEY=VALUE (Resource Groups
                                  Tagging API)
  function-tags NAME              print the JSON tags of a Lambda function
  function-concurrency NAME       print a Lambda function's reserved concurrency (`none` when unset)
  function-env NAME VAR           print one environment variable of a Lambda function
  delete-stack NAME               delete a stack behind tenantctl's back (a drift test)
Credentials and region come from the environment (test values only).
"""

import io
import json
import sys
import zipfile

import boto3

endpoint, command, *args = sys.argv[1:]


def client(service):
    return boto3.client(service, endpoint_url=endpoint)


if command == "upload-code":
    bucket, key = args
    s3 = client("s3")
    s3.create_bucket(
        Bucket=bucket,
        CreateBucketConfiguration={"LocationConstraint": s3.meta.region_name},
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\necho 'not run under moto'\n")
    s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
elif command == "tagged":
    key, value = args
    pages = client("resourcegroupstaggingapi").get_paginator("get_resources")
    arns = []
    for page in pages.paginate(TagFilters=[{"Key": key, "Values": [value]}]):
        arns += [r["ResourceARN"] for r in page["ResourceTagMappingList"]]
    print(json.dumps(sorted(arns)))
elif command == "function-tags":
    (name,) = args
    lam = client("lambda")
    arn = lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
    print(json.dumps(lam.list_tags(Resource=arn)["Tags"]))
elif command == "function-concurrency":
    (name,) = args
    got = client("lambda").get_function_concurrency(FunctionName=name)
    print(got.get("ReservedConcurrentExecutions", "none"))
elif command == "function-env":
    name, var = args
    config = client("lambda").get_function_configuration(FunctionName=name)
    print(config["Environment"]["Variables"][var])
elif command == "delete-stack":
    (name,) = args
    client("cloudformation").delete_stack(StackName=name)
else:
    sys.exit(f"unknown command {command}")
