"""moto's server with two CloudFormation gaps filled, both on the platform stack:

- `Fn::GetAtt [DBInstance, DbiResourceId]`: moto 5 models an RDS instance's `DbiResourceId`
  (DescribeDBInstances returns it) but does not expose it to `Fn::GetAtt`; the platform's
  `DbiResourceId` output scopes each tenant's `rds-db:connect`.
- `AWS::KMS::Key` `Tags`: CloudFormation writes them as `Key`/`Value`; moto passes them unchanged to
  its KMS API code, which expects `TagKey`/`TagValue`, and fails the whole stack.
- Executing a change set: moto updates the stack's resources but not its outputs, parameters or tags
  (a stack made by CreateStack has them; one made through a change set keeps none, and an update
  keeps the old ones). AWS replaces all three; so does this.
- Outputs that read a resource type moto's CloudFormation skips (API Gateway v2): moto fails every
  DescribeStacks of the stack; here such an output is left out, as the resource itself is.

Nothing else changes; the normal server starts.

Usage: python3 moto_server.py -H 127.0.0.1 -p PORT
"""

import sys

from moto.cloudformation.exceptions import ValidationError
from moto.cloudformation.models import ChangeSet
from moto.cloudformation.parsing import OutputMap
from moto.kms.models import Key
from moto.rds.models import DBInstance
from moto.server import main

_has_attr = DBInstance.has_cfn_attr.__func__
_get_attr = DBInstance.get_cfn_attribute


def has_cfn_attr(cls, attr):
    return attr == "DbiResourceId" or _has_attr(cls, attr)


def get_cfn_attribute(self, attribute_name):
    if attribute_name == "DbiResourceId":
        return self.dbi_resource_id
    return _get_attr(self, attribute_name)


_create_key = Key.create_from_cloudformation_json.__func__


def create_key_from_cloudformation_json(cls, resource_name, cloudformation_json, *args, **kwargs):
    properties = cloudformation_json.get("Properties", {})
    properties["Tags"] = [
        {"TagKey": t["Key"], "TagValue": t["Value"]} if "Key" in t else t
        for t in properties.get("Tags", [])
    ]
    return _create_key(cls, resource_name, cloudformation_json, *args, **kwargs)


Key.create_from_cloudformation_json = classmethod(create_key_from_cloudformation_json)

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
            return None
        raise


OutputMap.__getitem__ = output
DBInstance.has_cfn_attr = classmethod(has_cfn_attr)
DBInstance.get_cfn_attribute = get_cfn_attribute

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
