//! Mapping between the `hodei.v1` template messages and
//! [`JobTemplate`](crate::domain::template::JobTemplate) (the domain never
//! sees protobuf).

use crate::domain::spec::JobSpec;
use crate::domain::template::{JobTemplate, ParameterType, TemplateParameter};
use crate::proto::convert::ConvertError;
use crate::proto::v1;

/// The wire form of a parameter type.
#[must_use]
pub fn parameter_type_to_proto(t: ParameterType) -> v1::ParameterType {
    match t {
        ParameterType::Integer => v1::ParameterType::Integer,
        ParameterType::Boolean => v1::ParameterType::Boolean,
        ParameterType::Enum => v1::ParameterType::Enum,
        _ => v1::ParameterType::String,
    }
}

/// A parameter type from the wire (`UNSPECIFIED` reads as string).
pub fn parameter_type_from_proto(v: i32, field: &str) -> Result<ParameterType, ConvertError> {
    match v1::ParameterType::try_from(v) {
        Ok(v1::ParameterType::Unspecified | v1::ParameterType::String) => Ok(ParameterType::String),
        Ok(v1::ParameterType::Integer) => Ok(ParameterType::Integer),
        Ok(v1::ParameterType::Boolean) => Ok(ParameterType::Boolean),
        Ok(v1::ParameterType::Enum) => Ok(ParameterType::Enum),
        Err(_) => Err(ConvertError::new(
            field,
            format!("{v} is not a parameter type"),
        )),
    }
}

impl From<&TemplateParameter> for v1::TemplateParameter {
    fn from(p: &TemplateParameter) -> Self {
        Self {
            name: p.name.clone(),
            r#type: parameter_type_to_proto(p.kind) as i32,
            default_value: p.default.clone(),
            values: p.values.clone(),
            description: p.description.clone().unwrap_or_default(),
        }
    }
}

/// The wire form of a template; secret values are left out (names only).
impl From<&JobTemplate> for v1::JobTemplate {
    fn from(t: &JobTemplate) -> Self {
        Self {
            name: t.name().to_owned(),
            version: t.version(),
            description: t.description().unwrap_or_default().to_owned(),
            parameters: t.parameters().iter().map(Into::into).collect(),
            spec: Some((&t.spec().redacted()).into()),
            secret_names: t.spec().secret_names().map(str::to_owned).collect(),
        }
    }
}

/// A template to store, from the wire. Its version is ignored (the store
/// numbers versions); field paths start at `template.`.
impl TryFrom<v1::JobTemplate> for JobTemplate {
    type Error = ConvertError;

    fn try_from(p: v1::JobTemplate) -> Result<Self, Self::Error> {
        let spec = p
            .spec
            .ok_or_else(|| ConvertError::new("template.spec", "must be set"))?;
        let spec = JobSpec::try_from(spec).map_err(|e| ConvertError {
            field: format!("template.{}", e.field),
            message: e.message,
        })?;
        let parameters = p
            .parameters
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                let kind =
                    parameter_type_from_proto(q.r#type, &format!("template.parameters.{i}.type"))?;
                let mut param = TemplateParameter::new(q.name, kind).with_values(q.values);
                param.default = q.default_value;
                if !q.description.is_empty() {
                    param = param.with_description(q.description);
                }
                Ok(param)
            })
            .collect::<Result<Vec<_>, ConvertError>>()?;
        let mut t = JobTemplate::new(p.name, spec, parameters);
        if !p.description.is_empty() {
            t = t.with_description(p.description);
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::CommandType;

    #[test]
    fn templates_round_trip_without_secret_values() {
        let t = JobTemplate::new(
            "greet",
            JobSpec::new("greet {{who}}", CommandType::shell("echo", ["{{who}}"]))
                .with_secret("TOKEN", "s3cr3t-value"),
            vec![
                TemplateParameter::string("who")
                    .with_default("world")
                    .with_description("whom"),
                TemplateParameter::new("mode", ParameterType::Enum).with_values(["a", "b"]),
            ],
        )
        .with_description("says hello")
        .with_version(3);
        let wire = v1::JobTemplate::from(&t);
        assert_eq!(wire.version, 3);
        assert_eq!(wire.secret_names, ["TOKEN"]);
        assert!(wire.spec.as_ref().is_some_and(|s| s.secrets.is_empty()));
        let back = JobTemplate::try_from(wire).unwrap();
        assert_eq!(back.version(), 1, "the store numbers versions");
        assert_eq!(back.parameters(), t.parameters());
        assert_eq!(back.description(), Some("says hello"));
        assert_eq!(back.spec().command, t.spec().command);
    }

    #[test]
    fn a_bad_type_or_missing_spec_names_the_field() {
        let mut wire = v1::JobTemplate::from(&JobTemplate::new(
            "x",
            JobSpec::new("x", CommandType::shell("true", [""; 0])),
            vec![TemplateParameter::string("p")],
        ));
        wire.parameters[0].r#type = 99;
        assert_eq!(
            JobTemplate::try_from(wire.clone()).unwrap_err().field,
            "template.parameters.0.type"
        );
        wire.spec = None;
        assert_eq!(
            JobTemplate::try_from(wire).unwrap_err().field,
            "template.spec"
        );
    }
}
