#!/usr/bin/env bash
# Create the cluster's security group: all traffic between its members (Ray, EFS, MLflow), SSH
# from inside the VPC only (the bastion or VPN that runs `ray up`), nothing from the internet.
# Ray's own default group would open SSH to the world: cluster.yaml names this one instead.
#
#   deploy/security_group.sh VPC_ID [GROUP_NAME]    # prints the group id for SecurityGroupIds
set -euo pipefail
vpc_id=${1:?usage: deploy/security_group.sh VPC_ID [GROUP_NAME]}
name=${2:-emotion-sweep}
vpc_cidr=$(aws ec2 describe-vpcs --vpc-ids "$vpc_id" --query 'Vpcs[0].CidrBlock' --output text)
group_id=$(aws ec2 create-security-group --vpc-id "$vpc_id" --group-name "$name" \
  --description "emotion-sweep Ray cluster: its own members, SSH from the VPC" \
  --query GroupId --output text)
aws ec2 authorize-security-group-ingress --group-id "$group_id" --ip-permissions \
  "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$group_id}]" \
  "IpProtocol=tcp,FromPort=22,ToPort=22,IpRanges=[{CidrIp=$vpc_cidr}]" > /dev/null
echo "$group_id"
