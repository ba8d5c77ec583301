"""Fixed vocabularies of the synthetic generator: systems, CCOs, counties, names and codes.

These tables describe *synthetic data*, not the measure: the measure's code lists live in
``mappings/`` (spec §3 "Candidate code lists"), and the engine never reads this module. The
codes below mirror the spec's candidate lists so the cohort exercises them, plus codes that must
not count (well-child, ABA, autism, ADHD). No CPT descriptor text appears anywhere (AMA
copyright): codings carry codes only.

Systems and identifiers follow notes/helpers-common.md ("Shared constants"); the CCO identifier
system, the claim-number system and the EHR-local systems are the project's own (UNVERIFIED).
"""

from __future__ import annotations

from typing import Final

# --- identifier and code systems -------------------------------------------------------------
MEMBER_ID_SYSTEM: Final = "https://oregon.gov/oha/ohp/member-id"
CCO_SYSTEM: Final = "https://oregon.gov/oha/cco-id"
#: Claim number (ICN) of an EOB / Claim; UNVERIFIED, the project's own system.
CLAIM_NUMBER_SYSTEM: Final = "https://oregon.gov/oha/mmis/claim-number"
NPI_SYSTEM: Final = "http://hl7.org/fhir/sid/us-npi"
MRN_SYSTEM_A: Final = "https://ehr-a.example.org/fhir/sid/mrn"
MRN_SYSTEM_B: Final = "https://ehr-b.example.org/fhir/sid/mrn"
LOCAL_VISIT_SYSTEM: Final = "https://ehr.example.org/fhir/CodeSystem/visit-type"
#: A procedure system no mapping knows: such codings must never match (spec §3 "Code handling").
UNKNOWN_PROC_SYSTEM: Final = "https://billing.example.org/fhir/CodeSystem/local-procedure"

CPT: Final = "http://www.ama-assn.org/go/cpt"
HCPCS: Final = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD10CM: Final = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED: Final = "http://snomed.info/sct"
BLUEBUTTON_HCPCS: Final = "https://bluebutton.cms.gov/resources/codesystem/hcpcs"

#: Spellings of the CPT system seen in real payloads, canonical first (helpers-common.md).
CPT_VARIANTS: Final = (
    CPT,
    "urn:oid:2.16.840.1.113883.6.12",
    "https://www.ama-assn.org/go/cpt",
    BLUEBUTTON_HCPCS,
)
HCPCS_VARIANTS: Final = (
    HCPCS,
    "urn:oid:2.16.840.1.113883.6.285",
    "urn:oid:2.16.840.1.113883.6.14",
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    BLUEBUTTON_HCPCS,
)
ICD_VARIANTS: Final = (ICD10CM, "urn:oid:2.16.840.1.113883.6.90", "https://hl7.org/fhir/sid/icd-10-cm")

# FHIR R4 / THO code systems used in required or extensible bindings.
CLAIM_TYPE: Final = "http://terminology.hl7.org/CodeSystem/claim-type"
DIAGNOSIS_TYPE: Final = "http://terminology.hl7.org/CodeSystem/ex-diagnosistype"
C4BB_DIAGNOSIS_TYPE: Final = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBClaimDiagnosisType"
C4BB_CARE_TEAM_ROLE: Final = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBClaimCareTeamRole"
C4BB_IDENTIFIER_TYPE: Final = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBIdentifierType"
C4BB_ADJUDICATION_DISCRIMINATOR: Final = (
    "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudicationDiscriminator"
)
C4BB_PAYER_ADJUDICATION_STATUS: Final = (
    "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBPayerAdjudicationStatus"
)
C4BB_RELATED_CLAIM: Final = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBRelatedClaimRelationshipCodes"
RELATED_CLAIM: Final = "http://terminology.hl7.org/CodeSystem/ex-relatedclaimrelationship"
ADJUDICATION: Final = "http://terminology.hl7.org/CodeSystem/adjudication"
CARC: Final = "https://x12.org/codes/claim-adjustment-reason-codes"
PROCESS_PRIORITY: Final = "http://terminology.hl7.org/CodeSystem/processpriority"
ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION_TYPE: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
CONDITION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION: Final = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
SUBSCRIBER_RELATIONSHIP: Final = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
COVERAGE_CLASS: Final = "http://terminology.hl7.org/CodeSystem/coverage-class"
#: Source of Payment Typology; code 2 = Medicaid.
SOPT: Final = "https://nahdo.org/sopt"
V2_IDENTIFIER_TYPE: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"
OMB_RACE_ETHNICITY: Final = "urn:oid:2.16.840.1.113883.6.238"
US_CORE_RACE: Final = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
US_CORE_ETHNICITY: Final = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
US_CORE_BIRTHSEX: Final = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"
BCP47: Final = "urn:ietf:bcp:47"

# --- CCOs (helpers-common.md) and counties -----------------------------------------------------
CCOS: Final = (
    ("ADVANCED-HEALTH", "Advanced Health"),
    ("ALLCARE", "AllCare CCO"),
    ("CASCADE", "Cascade Health Alliance"),
    ("COLUMBIA-PACIFIC", "Columbia Pacific CCO"),
    ("EOCCO", "Eastern Oregon CCO"),
    ("HEALTH-SHARE", "Health Share of Oregon"),
    ("IHN", "InterCommunity Health Network CCO"),
    ("JCC", "Jackson Care Connect"),
    ("PSCS-CO", "PacificSource Community Solutions - Central Oregon"),
    ("PSCS-CG", "PacificSource Community Solutions - Columbia Gorge"),
    ("PSCS-LANE", "PacificSource Community Solutions - Lane"),
    ("PSCS-MP", "PacificSource Community Solutions - Marion Polk"),
    ("TRILLIUM-SW", "Trillium Community Health Plan - Southwest"),
    ("TRILLIUM-TC", "Trillium Community Health Plan - Tri-County"),
    ("UHA", "Umpqua Health Alliance"),
    ("YCCO", "Yamhill Community Care"),
)
_CCO_INDEX: Final = {cco_id: i for i, (cco_id, _name) in enumerate(CCOS)}

#: (county, county seat, relative weight of young Medicaid children, CCO ids serving it).
#: Weights are rough shares, CCO service areas approximate: synthetic data only.
_COUNTY_ROWS: Final = (
    ("Multnomah", "Portland", 180, ("HEALTH-SHARE", "TRILLIUM-TC")),
    ("Washington", "Hillsboro", 140, ("HEALTH-SHARE", "TRILLIUM-TC")),
    ("Clackamas", "Oregon City", 90, ("HEALTH-SHARE", "TRILLIUM-TC")),
    ("Marion", "Salem", 90, ("PSCS-MP",)),
    ("Lane", "Eugene", 80, ("PSCS-LANE", "TRILLIUM-SW")),
    ("Jackson", "Medford", 50, ("ALLCARE", "JCC")),
    ("Deschutes", "Bend", 40, ("PSCS-CO",)),
    ("Linn", "Albany", 30, ("IHN",)),
    ("Douglas", "Roseburg", 25, ("UHA", "TRILLIUM-SW")),
    ("Polk", "Dallas", 20, ("PSCS-MP",)),
    ("Yamhill", "McMinnville", 20, ("YCCO",)),
    ("Josephine", "Grants Pass", 20, ("ALLCARE",)),
    ("Umatilla", "Pendleton", 20, ("EOCCO",)),
    ("Klamath", "Klamath Falls", 20, ("CASCADE",)),
    ("Benton", "Corvallis", 15, ("IHN",)),
    ("Coos", "Coquille", 14, ("ADVANCED-HEALTH",)),
    ("Lincoln", "Newport", 10, ("IHN",)),
    ("Columbia", "St. Helens", 10, ("COLUMBIA-PACIFIC",)),
    ("Malheur", "Vale", 9, ("EOCCO",)),
    ("Clatsop", "Astoria", 8, ("COLUMBIA-PACIFIC",)),
    ("Jefferson", "Madras", 6, ("PSCS-CO",)),
    ("Hood River", "Hood River", 6, ("PSCS-CG",)),
    ("Wasco", "The Dalles", 6, ("PSCS-CG",)),
    ("Crook", "Prineville", 5, ("PSCS-CO",)),
    ("Tillamook", "Tillamook", 5, ("COLUMBIA-PACIFIC",)),
    ("Union", "La Grande", 5, ("EOCCO",)),
    ("Curry", "Gold Beach", 4, ("ADVANCED-HEALTH",)),
    ("Baker", "Baker City", 3, ("EOCCO",)),
    ("Morrow", "Heppner", 3, ("EOCCO",)),
    ("Lake", "Lakeview", 2, ("EOCCO",)),
    ("Harney", "Burns", 2, ("EOCCO",)),
    ("Grant", "Canyon City", 1, ("EOCCO",)),
    ("Wallowa", "Enterprise", 1, ("EOCCO",)),
    ("Gilliam", "Condon", 1, ("EOCCO",)),
    ("Sherman", "Moro", 1, ("EOCCO",)),
    ("Wheeler", "Fossil", 1, ("EOCCO",)),
)
#: (county, city, indexes into CCOS) for each Oregon county.
COUNTIES: Final = tuple(
    (name, city, tuple(_CCO_INDEX[c] for c in ccos)) for name, city, _w, ccos in _COUNTY_ROWS
)
COUNTY_WEIGHTS: Final = tuple(w for _n, _c, w, _ccos in _COUNTY_ROWS)

# --- people -------------------------------------------------------------------------------------
GIVEN_FEMALE: Final = (
    "Ava",
    "Mia",
    "Sofia",
    "Luna",
    "Emma",
    "Isabella",
    "Camila",
    "Harper",
    "Nora",
    "Aaliyah",
)
GIVEN_MALE: Final = ("Liam", "Noah", "Mateo", "Oliver", "Elijah", "Santiago", "Leo", "Ezra", "Kai", "Jayden")
FAMILY: Final = (
    "Smith", "Garcia", "Nguyen", "Johnson", "Martinez", "Lee", "Brown", "Lopez", "Kim", "Wilson",
    "Hernandez", "Davis", "Tran", "Miller", "Ramirez", "Anderson", "Clark", "Flores", "Young", "Walker",
)  # fmt: skip
#: (OMB race code, display), US Core race ombCategory.
RACES: Final = (
    ("2106-3", "White"),
    ("2054-5", "Black or African American"),
    ("2028-9", "Asian"),
    ("1002-5", "American Indian or Alaska Native"),
    ("2076-8", "Native Hawaiian or Other Pacific Islander"),
)
RACE_WEIGHTS: Final = (60, 8, 7, 4, 3)
ETHNICITIES: Final = (("2135-2", "Hispanic or Latino"), ("2186-5", "Not Hispanic or Latino"))
#: (BCP-47 tag, display) of preferred languages.
LANGUAGES: Final = (
    ("en", "English"),
    ("es", "Spanish"),
    ("vi", "Vietnamese"),
    ("ru", "Russian"),
    ("zh", "Chinese"),
    ("ar", "Arabic"),
    ("so", "Somali"),
    ("mam", "Mam"),
)
LANGUAGE_WEIGHTS: Final = (740, 180, 20, 15, 15, 10, 10, 10)

# --- providers ----------------------------------------------------------------------------------
#: EHR sources: folder, short key, organisation name, sites (city) of its Organizations.
EHR_A: Final = ("ehr-clinic-a", "a", "Riverbend Pediatrics", ("Portland", "Hillsboro", "Salem"))
EHR_B: Final = ("ehr-clinic-b", "b", "Cedar Valley Family Health", ("Eugene", "Medford"))
CLAIMS_SOURCE: Final = "oha-claims"
PRACTITIONERS_PER_EHR: Final = 24
#: Rendering providers that bill but whose EHR is not a source (behavioural health agencies etc.).
OTHER_PROVIDERS: Final = 80

# --- codes --------------------------------------------------------------------------------------
#: Issue-focused intervention procedures (spec §3 candidates) with relative weights.
INTERVENTIONS: Final = (
    ("90834", 18), ("90837", 14), ("90847", 14), ("90832", 8), ("90846", 4), ("90849", 1),
    ("90853", 2), ("90839", 1), ("96158", 4), ("96159", 1), ("96164", 1), ("96167", 3),
    ("96168", 1), ("96170", 1), ("H0004", 10), ("H2014", 6), ("H2027", 5), ("H0032", 2),
    ("H0036", 3), ("H2021", 1), ("H2022", 1), ("S9482", 1), ("T1027", 1), ("H2011", 1), ("H0038", 1),
)  # fmt: skip
ASSESSMENTS: Final = ("96110", "96127", "96161", "90791", "90792", "H0031", "H2000", "96112", "96113")
HCPCS_PREFIXES: Final = ("H", "S", "T", "G")
#: Social-emotional issue diagnoses (spec §3 candidate prefixes), billable ICD-10-CM codes.
SE_DIAGNOSES: Final = (
    ("F43.20", 14), ("F43.22", 8), ("F43.23", 5), ("F43.25", 3), ("F43.10", 5), ("F43.89", 2),
    ("F93.0", 7), ("F93.8", 2), ("F94.1", 2), ("F94.2", 1), ("F91.3", 6), ("F91.9", 3),
    ("F98.8", 3), ("F98.9", 1), ("F41.1", 1), ("F41.9", 3), ("Z62.820", 5), ("Z62.810", 1),
    ("Z63.8", 2), ("T74.4XXA", 1), ("T74.02XA", 1), ("T76.02XA", 1), ("F51.5", 1), ("F32.A", 1),
)  # fmt: skip
#: Diagnoses that do not qualify: autism, ADHD, speech, routine and acute paediatric care.
AUTISM: Final = "F84.0"
ADHD: Final = ("F90.2", "F90.9")
SCREENING_DX: Final = "Z13.39"
WELL_DX: Final = ("Z00.129", "Z00.121")
ACUTE_DX: Final = (
    ("J06.9", 10), ("H66.90", 6), ("R50.9", 4), ("J20.9", 3), ("L30.9", 2), ("R05.9", 3),
    ("B34.9", 3), ("K59.00", 1), ("F80.1", 1), ("Z23", 2),
)  # fmt: skip
SICK_VISIT_CODES: Final = (("99213", 7), ("99214", 3), ("99212", 1))
VACCINE_ADMIN: Final = "90460"
ABA: Final = "97153"
ABA_ASSESSMENT: Final = "97151"

#: Local visit types an EHR sends instead of CPT (helpers-common.md), keyed by the CPT they mean.
LOCAL_VISIT_TYPES: Final = {
    "90832": "BH-PSYTX-30",
    "90834": "BH-PSYTX-45",
    "90837": "BH-PSYTX-60",
    "90847": "BH-FAM",
    "90791": "BH-INTAKE",
    "99392": "WCC",
    "96127": "BH-SCREEN",
}
#: An EHR visit type no crosswalk maps (plain office visit): service codes then come from Procedure.
LOCAL_OFFICE_VISIT: Final = "OFFICE"

#: SNOMED CT referral procedures (eCQM value set "Referral for Adolescent Depression",
#: 2.16.840.1.113883.3.526.3.1570). UNVERIFIED as a choice for young-child SE referrals;
#: 306204008 (suggested in the brief) is a psychogeriatric referral there and is not used.
REFERRAL_CODES: Final = (
    ("306226009", "Referral to mental health counseling service"),
    ("306227000", "Referral for mental health counseling"),
    ("308459004", "Referral to psychologist"),
    ("306291008", "Referral to child and adolescent psychiatrist"),
)
#: SNOMED CT 3457005 "Patient referral" (US Core ServiceRequest category example).
REFERRAL_CATEGORY: Final = ("3457005", "Patient referral")


def weights_to_cumulative(weights: tuple[int, ...]) -> tuple[float, ...]:
    """Cumulative fractions for ``bisect`` sampling, last element exactly 1.0."""
    total = float(sum(weights))
    acc = 0.0
    out: list[float] = []
    for w in weights:
        acc += w
        out.append(acc / total)
    out[-1] = 1.0
    return tuple(out)


def npi(serial: int) -> str:
    """A 10-digit NPI with a valid Luhn check digit (prefix 80840, CMS NPI check-digit rule).

    Synthetic: serials start at 1 and give NPIs ``1999xxxxxC``.
    """
    body = f"1999{serial:05d}"
    digits = "80840" + body
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)
