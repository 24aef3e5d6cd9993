"""moto's server with eight CloudFormation gaps filled:

- `Fn::GetAtt [DBInstance, DbiResourceId]`: moto 5 models an RDS instance's `DbiResourceId`
  (DescribeDBInstances returns it) but does not expose it to `Fn::GetAtt`; the platform's
  `DbiResourceId` output scopes each tenant's `rds-db:connect`.
- `AWS::KMS::Key` `Tags`: CloudFormation writes them as `Key`/`Value`; moto passes them unchanged to
  its KMS API code, which expects `TagKey`/`TagValue`, and fails the whole stack.
- Executing a change set: moto updates the stack's resources but not its outputs, parameters or tags
  (a stack made by CreateStack has them; one made through a change set keeps none, and an update
  keeps the old ones). AWS replaces all three; so does this.
- Outputs that read a resource type moto's CloudFormation skips (API Gateway v2): moto fails every
  DescribeStacks of the stack; here such an output is left out, as the resource itself is, except a
  tenant's `ApiEndpoint`, which gets the address AWS would give (`https://<id>.execute-api.<region>
  .amazonaws.com`, nothing answers there) so `tenantctl status` can list it.
- Updating a resource whose type moto cannot update (an `AWS::EC2::EIP` whose tags changed): moto
  replaces it in the stack's resource map with nothing, so the next `Fn::GetAtt` on it (the NAT
  gateway's `AllocationId`) fails the whole update. Here the resource is kept as it was, as
  CloudFormation keeps a resource whose update changes only tags.
- An RDS instance whose `DBSubnetGroupName` is a name (a parameter, as a tenant stack receives the
  platform's): moto expects a resource of the same stack and drops the instance; and `Ref` of a
  `AWS::RDS::DBSubnetGroup` (the platform's output) gives moto's object, not the group's name.
- An RDS instance with `ManageMasterUserPassword`: moto's CloudFormation ignores it (no managed secret,
  no `Fn::GetAtt [.., MasterUserSecret.SecretArn]`). Here the secret is made, holding the instance's
  `MasterUsername`. For the dedicated-instance test only, `MOTO_RDS_ENDPOINT_ADDRESS`/`_PORT` make
  every instance's endpoint a local TLS Postgres and `MOTO_RDS_MASTER_PASSWORD` its managed password
  (the test generates it; moto's own default is a fixed string).
- Updating a Lambda function's `ReservedConcurrentExecutions` (how a suspension throttles a tenant's
  function to zero): moto reads it when it creates a function and ignores it on update. Here an update
  sets it, as AWS does.

Nothing else changes; the normal server starts.

For benchmarks only: with MOTO_STACK_OPERATION_SECONDS=N, an executed change set leaves its stack
`*_IN_PROGRESS` for N seconds before it reports `*_COMPLETE`, as AWS does while it creates resources
(moto completes instantly), so waiting and parallelism can be measured.

Usage: python3 moto_server.py -H 127.0.0.1 -p PORT
"""

import hashlib
import json
import os
import sys
import time
import types

from moto.cloudformation.exceptions import ValidationError
from moto.cloudformation.models import ChangeSet, CloudFormationBackend
import moto.cloudformation.parsing as cfn_parsing
from moto.cloudformation.parsing import OutputMap
from moto.awslambda.models import LambdaFunction
from moto.kms.models import Key
from moto.rds.models import DBInstance, DBSubnetGroup, MasterUserSecret
from moto.server import main

_has_attr = DBInstance.has_cfn_attr.__func__
_get_attr = DBInstance.get_cfn_attribute


def has_cfn_attr(cls, attr):
    return attr in ("DbiResourceId", "MasterUserSecret.SecretArn") or _has_attr(cls, attr)


def get_cfn_attribute(self, attribute_name):
    if attribute_name == "DbiResourceId":
        return self.dbi_resource_id
    if attribute_name == "MasterUserSecret.SecretArn":
        return self.master_user_secret.secret_arn
    return _get_attr(self, attribute_name)


_create_instance = DBInstance.create_from_cloudformation_json.__func__


def create_instance_from_cloudformation_json(cls, resource_name, cloudformation_json, *args, **kwargs):
    properties = cloudformation_json.get("Properties", {})
    # A subnet group given by name (a parameter, as a tenant stack gets the platform's) rather than as a
    # resource of the same stack: moto expects the resource.
    if isinstance(properties.get("DBSubnetGroupName"), str):
        properties["DBSubnetGroupName"] = types.SimpleNamespace(name=properties["DBSubnetGroupName"].lower())
    instance = _create_instance(cls, resource_name, cloudformation_json, *args, **kwargs)
    if str(properties.get("ManageMasterUserPassword", "")).lower() == "true":
        instance.manage_master_user_password = True
        instance.master_user_secret = MasterUserSecret(instance, None)
    if os.environ.get("MOTO_RDS_ENDPOINT_PORT"):
        instance.port = int(os.environ["MOTO_RDS_ENDPOINT_PORT"])
    return instance


DBInstance.create_from_cloudformation_json = classmethod(create_instance_from_cloudformation_json)

DBSubnetGroup.physical_resource_id = property(lambda self: self.name)

_address = DBInstance.address.fget
DBInstance.address = property(lambda self: os.environ.get("MOTO_RDS_ENDPOINT_ADDRESS") or _address(self))


_master_secret_string = MasterUserSecret._generate_secret_string


def master_secret_string(self):
    credentials = json.loads(_master_secret_string(self))
    credentials["username"] = getattr(self.resource, "master_username", None) or credentials["username"]
    if os.environ.get("MOTO_RDS_MASTER_PASSWORD"):
        credentials["password"] = os.environ["MOTO_RDS_MASTER_PASSWORD"]
    return json.dumps(credentials)


MasterUserSecret._generate_secret_string = master_secret_string


_create_key = Key.create_from_cloudformation_json.__func__


def create_key_from_cloudformation_json(cls, resource_name, cloudformation_json, *args, **kwargs):
    properties = cloudformation_json.get("Properties", {})
    properties["Tags"] = [
        {"TagKey": t["Key"], "TagValue": t["Value"]} if "Key" in t else t
        for t in properties.get("Tags", [])
    ]
    return _create_key(cls, resource_name, cloudformation_json, *args, **kwargs)


Key.create_from_cloudformation_json = classmethod(create_key_from_cloudformation_json)

_update_resource = cfn_parsing.parse_and_update_resource


def parse_and_update_resource(logical_id, resource_json, resources_map, account_id, region_name):
    updated = _update_resource(logical_id, resource_json, resources_map, account_id, region_name)
    return resources_map[logical_id] if updated is None else updated


cfn_parsing.parse_and_update_resource = parse_and_update_resource

_update_function = LambdaFunction.update_from_cloudformation_json.__func__


def update_function_from_cloudformation_json(cls, original_resource, new_resource_name, cloudformation_json, *args, **kwargs):
    updated = _update_function(cls, original_resource, new_resource_name, cloudformation_json, *args, **kwargs)
    updated.reserved_concurrency = cloudformation_json["Properties"].get("ReservedConcurrentExecutions")
    return updated


LambdaFunction.update_from_cloudformation_json = classmethod(update_function_from_cloudformation_json)

_apply = ChangeSet.apply


def apply(self):
    _apply(self)
    stack = self.stack
    if self.parameters:
        stack.parameters = self.parameters
    if self.tags is not None:
        stack.tags = self.tags
    stack.template = self.template
    stack._parse_template()
    stack.output_map = stack._create_output_map()


ChangeSet.apply = apply

_output = OutputMap.__getitem__


def output(self, key):
    try:
        return _output(self, key)
    except ValidationError as e:
        if "references undefined resource" in str(e):
            # A tenant's HTTP API: the address AWS would give it (execute-api, the stack's region),
            # derived from the stack id so each tenant's differs. Nothing answers there under moto.
            if key == "ApiEndpoint":
                region = self._stack_id.split(":")[3]
                api_id = hashlib.sha256(self._stack_id.encode()).hexdigest()[:10]
                return cfn_parsing.Output(
                    key=key,
                    value=f"https://{api_id}.execute-api.{region}.amazonaws.com",
                    description=None,
                )
            return None
        raise


OutputMap.__getitem__ = output
DBInstance.has_cfn_attr = classmethod(has_cfn_attr)
DBInstance.get_cfn_attribute = get_cfn_attribute

OPERATION_SECONDS = float(os.environ.get("MOTO_STACK_OPERATION_SECONDS", "0"))
_execute = CloudFormationBackend.execute_change_set
_describe = CloudFormationBackend.describe_stacks


def execute_change_set(self, change_set_name, stack_name=None):
    _execute(self, change_set_name, stack_name)
    if OPERATION_SECONDS > 0:
        for stack in self.stacks.values():
            if stack.name == stack_name or stack.stack_id == stack_name:
                stack._tenantctl_final = stack.status
                stack._tenantctl_ready_at = time.time() + OPERATION_SECONDS
                stack.status = stack.status.replace("_COMPLETE", "_IN_PROGRESS")


def describe_stacks(self, name_or_stack_id):
    now = time.time()
    for stack in self.stacks.values():
        ready_at = getattr(stack, "_tenantctl_ready_at", None)
        if ready_at is not None and ready_at <= now:
            stack.status = stack._tenantctl_final
            stack._tenantctl_ready_at = None
    return _describe(self, name_or_stack_id)


CloudFormationBackend.execute_change_set = execute_change_set
CloudFormationBackend.describe_stacks = describe_stacks

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
