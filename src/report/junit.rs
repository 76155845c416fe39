//! JUnit XML for CI test dashboards: one test case per frozen module (a BatchNorm layer, or
//! the other tensors of one module); a case fails with the explanation of its violations.

use std::collections::BTreeMap;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::audit::check::{CheckReport, Violation};
use crate::fmt::submodel;
use crate::report::text::{compared_line, scope_line};

/// Renders the `check` report as a JUnit XML document.
pub fn render(report: &CheckReport) -> String {
    let mut by_module: BTreeMap<&str, Vec<&Violation>> = BTreeMap::new();
    for v in &report.violations {
        by_module.entry(&v.layer).or_default().push(v);
    }
    let mut suite = TestSuite::new("bnaudit check");
    suite.add_properties([
        Property::new("a", report.diff.a.path.as_str()),
        Property::new("b", report.diff.b.path.as_str()),
        Property::new("scope", scope_line(report)),
        Property::new("compared", compared_line(report)),
    ]);
    for m in &report.modules {
        let status = match by_module.get(m.name.as_str()) {
            None => TestCaseStatus::success(),
            Some(violations) => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let kinds: Vec<&str> = violations.iter().map(|v| v.kind.as_str()).collect();
                status.set_type(kinds.join(","));
                status.set_message(violations[0].detail.as_str());
                let lines: Vec<String> = violations
                    .iter()
                    .map(|v| match &v.tensor {
                        Some(t) => format!("{}: {t}: {}", v.kind.as_str(), v.detail),
                        None => format!("{}: {}", v.kind.as_str(), v.detail),
                    })
                    .collect();
                status.set_description(lines.join("\n"));
                status
            }
        };
        let mut case = TestCase::new(m.name.as_str(), status);
        case.set_classname(format!("bnaudit.{}", submodel(&m.name)));
        case.set_assertions(m.tensors);
        suite.add_test_case(case);
    }
    let mut junit = Report::new("bnaudit");
    junit.add_test_suite(suite);
    junit
        .to_string()
        .expect("serialising to a String cannot fail")
}
