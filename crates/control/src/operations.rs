//! Long-running operations: a persisted status document per operation, which ARM clients poll
//! through `Azure-AsyncOperation` / `Location` URLs.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::deployment::{now, rfc3339};
use crate::store::OperationRecord;
use crate::{ControlError, ControlPlane};

/// The outcome of a finished operation.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded,
    Failed { code: String, message: String },
}

impl ControlPlane {
    /// Records a new operation in progress on `resource_id`; returns its id.
    pub fn start_operation(&self, resource_id: &str) -> Result<String, ControlError> {
        let id = Uuid::new_v4().to_string();
        self.store.put_operation(&OperationRecord {
            id: id.clone(),
            body: json!({
                "name": id,
                "status": "InProgress",
                "startTime": rfc3339(now()),
                "resourceId": resource_id,
            }),
        })?;
        Ok(id)
    }

    /// Marks an operation finished.
    pub fn finish_operation(&self, id: &str, outcome: Outcome) -> Result<(), ControlError> {
        self.finish_operation_with_output(id, outcome, None)
    }

    /// Marks an operation finished with an output (`properties.output`, as Azure's disk
    /// operations carry e.g. `accessSAS`): its result URL then answers with the output rather
    /// than the resource.
    pub fn finish_operation_with_output(
        &self,
        id: &str,
        outcome: Outcome,
        output: Option<Value>,
    ) -> Result<(), ControlError> {
        let Some(mut op) = self.store.operation(id)? else {
            return Ok(());
        };
        op.body["endTime"] = json!(rfc3339(now()));
        if let Some(output) = output {
            op.body["properties"] = json!({"output": output});
        }
        match outcome {
            Outcome::Succeeded => op.body["status"] = json!("Succeeded"),
            Outcome::Failed { code, message } => {
                op.body["status"] = json!("Failed");
                op.body["error"] = json!({"code": code, "message": message});
            }
        }
        self.store.put_operation(&op)?;
        Ok(())
    }

    /// The status document of an operation, `None` if unknown.
    pub fn operation(&self, id: &str) -> Result<Option<Value>, ControlError> {
        Ok(self.store.operation(id)?.map(|op| op.body))
    }
}
