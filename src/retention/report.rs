//! `slipway retention plan`: what `--retention` keeps and would delete, per
//! image, read from the registry; nothing is deleted.

use std::fmt::Write;
use std::sync::Arc;

use super::{Retention, RetentionError, RetentionSettings};
use crate::config::RetentionPlanArgs;
use crate::registry::Registry;

/// The plan of every image `args` names (or the records do), as text.
pub async fn plan_command(args: RetentionPlanArgs) -> Result<String, RetentionError> {
    let args = args.without_empty_values();
    let policy = args.retention.policy.0.ok_or(RetentionError::NoPolicy)?;
    let settings = args.registry.settings();
    let registry = Registry::new(&settings)?;
    let store = crate::store::open(args.database.as_ref(), &args.data_dir).await?;
    let retention = Retention::new(
        RetentionSettings {
            policy,
            dry_run: true,
            lease: std::time::Duration::from_secs(30),
        },
        registry.clone(),
        store,
        Arc::default(),
    );
    let images = if args.images.is_empty() {
        retention.images().await?
    } else {
        args.images.clone()
    };
    let mut out = String::new();
    if images.is_empty() {
        out.push_str("no image: Slipway's records name none published to this registry (name images to plan for: `slipway retention plan api web`)\n");
    }
    for name in &images {
        let plan = retention.plan(name).await?;
        render(&mut out, &registry.repository(name), registry.host(), &plan);
    }
    Ok(out)
}

fn render(out: &mut String, repository: &str, host: &str, plan: &super::Plan) {
    let deleted = plan.deleted_versions();
    let _ = writeln!(
        out,
        "{host}/{repository}: keeps {} versions, deletes {} ({} manifests)",
        plan.kept.len(),
        deleted.len(),
        plan.deletions.len()
    );
    for (tag, why) in &plan.kept {
        let _ = writeln!(out, "  keep    {tag}  ({why})");
    }
    for deletion in &plan.deletions {
        let _ = writeln!(out, "  delete  {}  {}", deletion.target, deletion.digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::{Deletion, Kept, Plan, Target};

    #[test]
    fn a_plan_reads_as_kept_then_deleted() {
        let plan = Plan {
            kept: vec![
                ("2.0.0".into(), Kept::Newest(1)),
                ("1.4.0".into(), Kept::Reached("latest".into())),
            ],
            deletions: vec![
                Deletion {
                    digest: "sha256:aa".into(),
                    target: Target::Version("1.0.0".into()),
                },
                Deletion {
                    digest: "sha256:bb".into(),
                    target: Target::Signature {
                        subject: "sha256:aa".into(),
                    },
                },
            ],
        };
        let mut out = String::new();
        render(&mut out, "team/api", "registry:5000", &plan);
        assert_eq!(
            out,
            "registry:5000/team/api: keeps 2 versions, deletes 1 (2 manifests)\n\
             \x20 keep    2.0.0  (the newest)\n\
             \x20 keep    1.4.0  (tag `latest` points at it)\n\
             \x20 delete  version 1.0.0  sha256:aa\n\
             \x20 delete  the signature of sha256:aa  sha256:bb\n"
        );
    }
}
