//! Internet access for a public network: an internet gateway and a route table sending
//! `0.0.0.0/0` to it, associated with every subnet of the run.

use aws_sdk_ec2::types::{InternetGateway, ResourceType, RouteTable};

use super::Ec2;
use super::error::{AwsError, fail};
use super::network::NetworkOut;
use super::tags::{RunTags, TAG_RUN, filter};
use super::wait::{ignore_not_found, retry_codes, retry_not_found};

const DEFAULT_ROUTE: &str = "0.0.0.0/0";

impl Ec2 {
    /// Ensures gateway + route table for `subnet_ids` in `vpc_id`; returns their ids.
    ///
    /// Guarantees: idempotent (adopts tagged gateway/table, attaches only if not attached, adds
    /// the default route and associations only where missing).
    pub(crate) async fn ensure_internet_route(
        &self,
        tags: &RunTags,
        step: &str,
        vpc_id: &str,
        subnet_ids: &[&str],
    ) -> Result<(String, String), AwsError> {
        let label = tags.label("internet gateway", step);
        let found = self
            .client
            .describe_internet_gateways()
            .set_filters(Some(tags.step_filters(step)))
            .send()
            .await
            .map_err(fail("DescribeInternetGateways", &label))?;
        let (igw_id, attached) = match found.internet_gateways().first() {
            Some(g) => {
                let id = g.internet_gateway_id().unwrap_or_default().to_string();
                if let Some(other) = attached_elsewhere(g, vpc_id) {
                    // Only if the step's VPC was replaced by hand; routing through it would fail.
                    return Err(AwsError::invalid(
                        "AttachInternetGateway",
                        label,
                        format!("{id} is attached to {other}, not {vpc_id}"),
                    ));
                }
                let attached = g.attachments().iter().any(|a| a.vpc_id() == Some(vpc_id));
                (id, attached)
            }
            None => {
                let out = self
                    .client
                    .create_internet_gateway()
                    .tag_specifications(tags.spec(ResourceType::InternetGateway, step))
                    .send()
                    .await
                    .map_err(fail("CreateInternetGateway", &label))?;
                let id = out.internet_gateway().and_then(|g| g.internet_gateway_id());
                (id.unwrap_or_default().to_string(), false)
            }
        };
        if !attached {
            let r = retry_not_found(|| async {
                self.client
                    .attach_internet_gateway()
                    .internet_gateway_id(&igw_id)
                    .vpc_id(vpc_id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(fail("AttachInternetGateway", &igw_id))
            })
            .await;
            match r {
                // Attached by an earlier attempt whose describe we did not see yet - or to some
                // other VPC, which the re-check tells apart.
                Err(e) if e.code() == Some("Resource.AlreadyAssociated") => {
                    let now = self
                        .client
                        .describe_internet_gateways()
                        .internet_gateway_ids(&igw_id)
                        .send()
                        .await
                        .map_err(fail("DescribeInternetGateways", &igw_id))?;
                    if now
                        .internet_gateways()
                        .iter()
                        .any(|g| attached_elsewhere(g, vpc_id).is_some())
                    {
                        return Err(e);
                    }
                }
                other => other?,
            }
        }

        let label = tags.label("route table", step);
        let found = self
            .client
            .describe_route_tables()
            .set_filters(Some(
                [vec![filter("vpc-id", &[vpc_id])], tags.step_filters(step)].concat(),
            ))
            .send()
            .await
            .map_err(fail("DescribeRouteTables", &label))?;
        let table = match found.route_tables().first() {
            Some(t) => t.clone(),
            None => {
                let out = self
                    .client
                    .create_route_table()
                    .vpc_id(vpc_id)
                    .tag_specifications(tags.spec(ResourceType::RouteTable, step))
                    .send()
                    .await
                    .map_err(fail("CreateRouteTable", &label))?;
                out.route_table().cloned().ok_or_else(|| {
                    AwsError::not_yet("CreateRouteTable", &label, "response had no route table")
                })?
            }
        };
        let rt_id = table.route_table_id().unwrap_or_default().to_string();
        let has_route = table
            .routes()
            .iter()
            .any(|r| r.destination_cidr_block() == Some(DEFAULT_ROUTE));
        if !has_route {
            let r = retry_not_found(|| async {
                self.client
                    .create_route()
                    .route_table_id(&rt_id)
                    .destination_cidr_block(DEFAULT_ROUTE)
                    .gateway_id(&igw_id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(fail("CreateRoute", &rt_id))
            })
            .await;
            match r {
                Err(e) if e.code() == Some("RouteAlreadyExists") => {}
                other => other?,
            }
        }
        for subnet in subnet_ids {
            let associated = table
                .associations()
                .iter()
                .any(|a| a.subnet_id() == Some(subnet));
            if associated {
                continue;
            }
            let r = retry_not_found(|| async {
                self.client
                    .associate_route_table()
                    .route_table_id(&rt_id)
                    .subnet_id(*subnet)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(fail("AssociateRouteTable", subnet))
            })
            .await;
            match r {
                Err(e) if e.code() == Some("Resource.AlreadyAssociated") => {}
                other => other?,
            }
        }
        Ok((igw_id, rt_id))
    }

    /// Deletes the step's route table and gateway, found by tags and/or `out`.
    pub(crate) async fn delete_internet_routes(
        &self,
        tags: &RunTags,
        step: &str,
        out: Option<&NetworkOut>,
    ) -> Result<(), AwsError> {
        let label = tags.label("route table", step);
        let tables = self
            .client
            .describe_route_tables()
            .set_filters(Some(tags.step_filters(step)))
            .send()
            .await
            .map_err(fail("DescribeRouteTables", &label))?;
        let mut rt_ids: Vec<String> = tables
            .route_tables()
            .iter()
            .filter_map(|t| t.route_table_id().map(str::to_string))
            .collect();
        rt_ids.extend(out.and_then(|o| o.route_table_id.clone()));
        rt_ids.sort();
        rt_ids.dedup();
        for id in rt_ids {
            self.delete_route_table(&id).await?;
        }

        let label = tags.label("internet gateway", step);
        let gws = self
            .client
            .describe_internet_gateways()
            .set_filters(Some(tags.step_filters(step)))
            .send()
            .await
            .map_err(fail("DescribeInternetGateways", &label))?;
        let mut igw_ids: Vec<String> = gws
            .internet_gateways()
            .iter()
            .filter_map(|g| g.internet_gateway_id().map(str::to_string))
            .collect();
        igw_ids.extend(out.and_then(|o| o.internet_gateway_id.clone()));
        igw_ids.sort();
        igw_ids.dedup();
        for id in igw_ids {
            self.delete_internet_gateway(&id).await?;
        }
        Ok(())
    }

    /// Every route table of `vpc_id`.
    pub(crate) async fn route_tables_of(&self, vpc_id: &str) -> Result<Vec<RouteTable>, AwsError> {
        let out = self
            .client
            .describe_route_tables()
            .filters(filter("vpc-id", &[vpc_id]))
            .send()
            .await
            .map_err(fail("DescribeRouteTables", vpc_id))?;
        Ok(out.route_tables().to_vec())
    }

    /// Deletes the run-tagged route tables and gateways inside `vpc_id` (the VPC's main route
    /// table goes with the VPC itself).
    pub(crate) async fn delete_routes_of_vpc(&self, vpc_id: &str) -> Result<(), AwsError> {
        let tables = self.route_tables_of(vpc_id).await?;
        for t in tables.iter().filter(|t| !is_main(t)) {
            self.delete_route_table(t.route_table_id().unwrap_or_default())
                .await?;
        }
        let gws = self
            .client
            .describe_internet_gateways()
            .filters(filter("attachment.vpc-id", &[vpc_id]))
            .send()
            .await
            .map_err(fail("DescribeInternetGateways", vpc_id))?;
        for g in gws.internet_gateways() {
            let id = g.internet_gateway_id().unwrap_or_default();
            let ours = g.tags().iter().any(|t| t.key() == Some(TAG_RUN));
            if ours {
                self.delete_internet_gateway(id).await?;
            } else {
                // Not ours: only detach, so the VPC can go.
                self.detach_internet_gateway(id, vpc_id).await?;
            }
        }
        Ok(())
    }

    /// Removes a route table's subnet associations, then the table. Gone = success.
    pub(crate) async fn delete_route_table(&self, rt_id: &str) -> Result<(), AwsError> {
        let found = self
            .client
            .describe_route_tables()
            .route_table_ids(rt_id)
            .send()
            .await
            .map_err(fail("DescribeRouteTables", rt_id));
        let table = match found {
            Ok(o) => match o.route_tables().first() {
                Some(t) => t.clone(),
                None => return Ok(()),
            },
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        if is_main(&table) {
            return Ok(()); // deleted together with its VPC; EC2 refuses to delete it directly
        }
        for a in table.associations() {
            let Some(assoc) = a.route_table_association_id() else {
                continue;
            };
            ignore_not_found(
                self.client
                    .disassociate_route_table()
                    .association_id(assoc)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(fail("DisassociateRouteTable", assoc)),
            )?;
        }
        ignore_not_found(
            retry_codes(&["DependencyViolation"], || async {
                self.client
                    .delete_route_table()
                    .route_table_id(rt_id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(fail("DeleteRouteTable", rt_id))
            })
            .await,
        )
    }

    /// Detaches a gateway from every VPC, then deletes it. Gone = success.
    pub(crate) async fn delete_internet_gateway(&self, igw_id: &str) -> Result<(), AwsError> {
        let found = self
            .client
            .describe_internet_gateways()
            .internet_gateway_ids(igw_id)
            .send()
            .await
            .map_err(fail("DescribeInternetGateways", igw_id));
        let gw = match found {
            Ok(o) => match o.internet_gateways().first() {
                Some(g) => g.clone(),
                None => return Ok(()),
            },
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        for a in gw.attachments() {
            if let Some(vpc) = a.vpc_id() {
                self.detach_internet_gateway(igw_id, vpc).await?;
            }
        }
        ignore_not_found(
            self.client
                .delete_internet_gateway()
                .internet_gateway_id(igw_id)
                .send()
                .await
                .map(|_| ())
                .map_err(fail("DeleteInternetGateway", igw_id)),
        )
    }

    async fn detach_internet_gateway(&self, igw_id: &str, vpc_id: &str) -> Result<(), AwsError> {
        // DependencyViolation while instances still hold public addresses in the VPC.
        let r = retry_codes(&["DependencyViolation"], || async {
            self.client
                .detach_internet_gateway()
                .internet_gateway_id(igw_id)
                .vpc_id(vpc_id)
                .send()
                .await
                .map(|_| ())
                .map_err(fail("DetachInternetGateway", igw_id))
        })
        .await;
        match r {
            Err(e) if e.code() == Some("Gateway.NotAttached") => Ok(()),
            other => ignore_not_found(other),
        }
    }
}

/// The VPC a gateway is attached to, when that is not `vpc_id`.
fn attached_elsewhere<'a>(g: &'a InternetGateway, vpc_id: &str) -> Option<&'a str> {
    g.attachments()
        .iter()
        .filter_map(|a| a.vpc_id())
        .find(|v| *v != vpc_id)
}

fn is_main(t: &RouteTable) -> bool {
    t.associations().iter().any(|a| a.main() == Some(true))
}
